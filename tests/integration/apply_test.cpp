// apply / verify / revert on this machine's real kernel. Every test restores every value it can
// touch (KernelValueGuard) and keeps its journal in a temp state directory.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "support/fixture.h"
#include "support/host_guard.h"
#include "support/run_spark_tune.h"
#include "tune/actuator.h"

using spark::tune::normalize_value;

namespace spark {
namespace {

namespace fs = std::filesystem;

class RealApply : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::is_root()) GTEST_SKIP() << "writing /proc/sys needs root";
    if (::access("/proc/sys/vm/dirty_ratio", W_OK) != 0) GTEST_SKIP() << "/proc/sys is read-only here";
    guard = std::make_unique<test::KernelValueGuard>(test::profile_kernel_files());
    state = fs::temp_directory_path() / ("spark-tune-it-" + std::to_string(::getpid()));
    fs::remove_all(state);
    env = {"SPARK_TUNE_STATE_DIR=" + state.string()};
  }
  void TearDown() override {
    if (!state.empty()) {
      // Restore through the product first (the journal), then the guard puts back anything left.
      test::run_spark_tune({"revert"}, env);
      fs::remove_all(state);
    }
    guard.reset();
  }
  test::ProcessResult st(const std::vector<std::string>& args) { return test::run_spark_tune(args, env); }

  std::unique_ptr<test::KernelValueGuard> guard;
  fs::path state;
  std::vector<std::string> env;
};

TEST_F(RealApply, ApplyVerifyDriftRevert) {
  auto dry = st({"apply", "dgx-spark", "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  auto plan = nlohmann::json::parse(dry.out);
  EXPECT_EQ(test::kernel_value("/proc/sys/vm/dirty_ratio"), guard->original("/proc/sys/vm/dirty_ratio"));

  auto a = st({"apply", "dgx-spark"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  // Read back with the kernel's own interface: every planned value is what /proc/sys and sysfs say.
  for (const auto& s : plan["profile"]["settings"]) {
    std::string key = s["key"];
    std::string file = key.rfind("thp.", 0) == 0
                           ? "/sys/kernel/mm/transparent_hugepage/" + key.substr(4)
                           : "/proc/sys/" + key.substr(0, key.find('.')) + "/" + key.substr(key.find('.') + 1);
    EXPECT_EQ(test::kernel_value(file), s["value"].get<std::string>()) << key;
  }
  EXPECT_EQ(test::kernel_value("/proc/sys/vm/dirty_ratio"), "5");
  EXPECT_EQ(test::kernel_value("/proc/sys/vm/vfs_cache_pressure"), "200");
  EXPECT_EQ(st({"verify"}).exit_code, 0);

  ASSERT_TRUE(write_value("/proc/sys/vm/vfs_cache_pressure", "137").ok());
  auto v = st({"verify", "--json"});
  EXPECT_EQ(v.exit_code, 1) << v.out << v.err;
  EXPECT_NE(v.out.find("\"drift\":true"), std::string::npos);

  auto r = st({"revert"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& [file, value] : guard->saved()) EXPECT_EQ(test::kernel_value(file), normalize_value(value)) << file;
  EXPECT_EQ(st({"revert"}).exit_code, 0);  // idempotent
  EXPECT_EQ(st({"verify"}).exit_code, 2);  // nothing applied: an error, not a pass
}

TEST_F(RealApply, CoupledDirtyBytesRevertToTheRatio) {
  auto a = st({"apply", "gpu-workstation"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(test::kernel_value("/proc/sys/vm/dirty_bytes"), std::to_string(1ull << 30));
  EXPECT_EQ(test::kernel_value("/proc/sys/vm/dirty_ratio"), "0");  // the kernel zeroed its twin
  ASSERT_EQ(st({"revert"}).exit_code, 0);
  EXPECT_EQ(test::kernel_value("/proc/sys/vm/dirty_ratio"), guard->original("/proc/sys/vm/dirty_ratio"));
  EXPECT_EQ(test::kernel_value("/proc/sys/vm/dirty_bytes"), guard->original("/proc/sys/vm/dirty_bytes"));
  EXPECT_EQ(test::kernel_value("/proc/sys/vm/dirty_background_ratio"),
            guard->original("/proc/sys/vm/dirty_background_ratio"));
}

TEST_F(RealApply, KernelRefusalRollsBackEverythingAndNamesTheKey) {
  // dirty_bytes below two pages is refused by the kernel itself (EINVAL) after other writes succeeded.
  fs::path profile = state.string() + "-bad.toml";
  {
    std::ofstream f(profile);
    f << "[sysctl]\nvm.vfs_cache_pressure = 150\nvm.swappiness = 33\nvm.dirty_bytes = 1\n";
  }
  auto a = st({"apply", profile.string()});
  fs::remove(profile);
  EXPECT_EQ(a.exit_code, 2);
  EXPECT_NE(a.err.find("vm.dirty_bytes"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("Invalid argument"), std::string::npos) << a.err;
  for (const auto& [file, value] : guard->saved()) EXPECT_EQ(test::kernel_value(file), normalize_value(value)) << file;
}

TEST_F(RealApply, KillNineBetweenJournalAndLastWriteThenRevert) {
  // The child stops itself after its second kernel write; we kill -9 it there.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("SPARK_TUNE_STATE_DIR", state.c_str(), 1);
    ::setenv("SPARK_TUNE_TEST_STOP_AFTER_WRITES", "2", 1);
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 2);
    ::execl(SPARK_TUNE_BINARY, SPARK_TUNE_BINARY, "apply", "dgx-spark", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << "apply finished without reaching its second write";
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  // Mid-transaction: some values changed, the journal holds all originals.
  EXPECT_TRUE(fs::exists(state / "journal.json"));
  size_t changed = 0;
  for (const auto& [file, value] : guard->saved()) changed += test::kernel_value(file) != normalize_value(value);
  EXPECT_EQ(changed, 2u);
  auto r = st({"revert"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& [file, value] : guard->saved()) EXPECT_EQ(test::kernel_value(file), normalize_value(value)) << file;
}

TEST_F(RealApply, BadInputChangesNothing) {
  auto a = st({"apply", "no-such-profile"});
  EXPECT_EQ(a.exit_code, 2);
  EXPECT_NE(a.err.find("profile list"), std::string::npos);
  EXPECT_FALSE(fs::exists(state / "journal.json"));
  for (const auto& [file, value] : guard->saved()) EXPECT_EQ(test::kernel_value(file), normalize_value(value)) << file;
}

}  // namespace
}  // namespace spark
