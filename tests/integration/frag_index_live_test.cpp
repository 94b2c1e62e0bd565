// Our indices against the running kernel's own debugfs extfrag/ files. When debugfs is not
// mounted, it is mounted privately on a temporary directory for the test and unmounted after.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>

#include "core/fs.h"
#include "core/host_paths.h"
#include "support/fixture.h"
#include "telemetry/buddyinfo.h"
#include "telemetry/frag_index.h"

using spark::telemetry::format_extfrag_index_file, spark::telemetry::format_unusable_index_file,
    spark::telemetry::parse_buddyinfo;

namespace spark {
namespace {

class TempDebugfs {
 public:
  TempDebugfs() {
    char tmpl[] = "/tmp/spark-tune-debugfs-XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    if (::mount("debugfs", tmpl, "debugfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0) mounted_ = true;
  }
  ~TempDebugfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  bool mounted() const { return mounted_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
};

TEST(FragIndexLive, MatchesKernelExtfragFiles) {
  if (!test::is_root()) GTEST_SKIP() << "debugfs extfrag/ needs root";
  HostPaths paths = HostPaths::system();
  std::filesystem::path extfrag = paths.debugfs / "extfrag";
  std::unique_ptr<TempDebugfs> temp;
  if (!std::filesystem::exists(extfrag)) {
    temp = std::make_unique<TempDebugfs>();
    if (!temp->mounted()) GTEST_SKIP() << "debugfs is not mounted and could not be mounted";
    extfrag = temp->dir() / "extfrag";
    if (!std::filesystem::exists(extfrag)) GTEST_SKIP() << "kernel without CONFIG_DEBUG_FS+CONFIG_COMPACTION extfrag/";
  }
  // buddyinfo changes under us; keep a sample where buddyinfo read the same before and after.
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto before = read_file(paths.proc / "buddyinfo");
    auto ext = read_file(extfrag / "extfrag_index");
    auto unusable = read_file(extfrag / "unusable_index");
    auto after = read_file(paths.proc / "buddyinfo");
    ASSERT_TRUE(before.ok() && ext.ok() && unusable.ok() && after.ok());
    if (*before != *after) continue;
    auto b = parse_buddyinfo(*before);
    ASSERT_TRUE(b.ok()) << b.error().what();
    EXPECT_EQ(format_extfrag_index_file(*b), *ext);
    EXPECT_EQ(format_unusable_index_file(*b), *unusable);
    return;
  }
  GTEST_SKIP() << "buddyinfo never held still for one sample";
}

}  // namespace
}  // namespace spark
