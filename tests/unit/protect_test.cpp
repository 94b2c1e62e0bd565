// protect: drop-ins validated by systemd-analyze verify, written atomically, removed exactly.
#include "daemon/protect.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "support/fixture.h"
#include "support/run_cli.h"

namespace spark {
namespace {

bool have_systemd_analyze() {
  for (const char* dir : {"/usr/bin", "/bin", "/usr/local/bin"})
    if (std::filesystem::exists(std::string(dir) + "/systemd-analyze")) return true;
  return false;
}

TEST(Protect, UnitNames) {
  EXPECT_EQ(*protect_unit_name("sshd"), "sshd.service");
  EXPECT_EQ(*protect_unit_name("user.slice"), "user.slice");
  EXPECT_EQ(*protect_unit_name("getty@tty1.service"), "getty@tty1.service");
  EXPECT_FALSE(protect_unit_name("sshd.socket").ok());
  EXPECT_FALSE(protect_unit_name("../etc").ok());
  EXPECT_FALSE(protect_unit_name("a b").ok());
  EXPECT_FALSE(protect_unit_name("").ok());
}

TEST(Protect, DropinTextPerUnitType) {
  ProtectSpec spec;
  auto svc = protect_dropin_text("sshd.service", spec, false);
  EXPECT_NE(svc.find("[Service]\nMemoryMin=256M\nMemoryLow=1G\nOOMScoreAdjust=-900\nManagedOOMPreference=avoid\n"),
            std::string::npos)
      << svc;
  auto slice = protect_dropin_text("user.slice", spec, true);
  EXPECT_NE(slice.find("[Slice]"), std::string::npos);
  EXPECT_EQ(slice.find("OOMScoreAdjust"), std::string::npos);  // not valid in a slice
  EXPECT_NE(slice.find(k_protect_created_dir), std::string::npos);
}

TEST(Protect, SystemdAnalyzeAcceptsOursAndRejectsBadDropins) {
  if (!have_systemd_analyze()) GTEST_SKIP() << "systemd-analyze is not installed";
  ProtectSpec spec;
  auto ok = verify_dropin("sshd.service", protect_dropin_text("sshd.service", spec, false));
  EXPECT_TRUE(ok.ok()) << ok.error().what();
  EXPECT_TRUE(verify_dropin("user.slice", protect_dropin_text("user.slice", spec, false)).ok());
  auto bad = verify_dropin("sshd.service", "[Service]\nMemoryMin=lots\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.error().what()).find("Invalid memory limit"), std::string::npos) << bad.error().what();
  // The key the issue text names is not valid systemd syntax; ManagedOOMPreference is.
  EXPECT_FALSE(verify_dropin("sshd.service", "[Service]\nManagedOOMMemoryPressure=avoid\n").ok());
  EXPECT_FALSE(verify_dropin("user.slice", "[Slice]\nOOMScoreAdjust=-900\n").ok());
}

TEST(Protect, WritesThenUndoesExactly) {
  if (!have_systemd_analyze()) GTEST_SKIP() << "systemd-analyze is not installed";
  test::FixtureRoot root;
  const auto& paths = root.paths();
  // A directory with the user's own drop-in: protect adds beside it, undo leaves it.
  root.write("etc/systemd/system/ssh.service.d/override.conf", "[Service]\nNice=5\n");
  auto r = protect_units(paths, {"ssh", "user.slice"}, ProtectSpec{});
  ASSERT_TRUE(r.ok()) << r.error().what();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_TRUE((*r)[0].changed);
  auto ssh = protect_dropin_path(paths, "ssh.service");
  auto user = protect_dropin_path(paths, "user.slice");
  EXPECT_TRUE(std::filesystem::exists(ssh));
  EXPECT_EQ(read_file(ssh)->find(k_protect_created_dir), std::string::npos);  // the dir was there
  EXPECT_NE(read_file(user)->find(k_protect_created_dir), std::string::npos);
  // Again: nothing changes, and the created-directory mark survives.
  auto again = protect_units(paths, {"ssh", "user.slice"}, ProtectSpec{});
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)[0].changed);
  EXPECT_NE(read_file(user)->find(k_protect_created_dir), std::string::npos);
  auto undo = unprotect_units(paths, {"ssh", "user.slice"});
  ASSERT_TRUE(undo.ok()) << undo.error().what();
  EXPECT_FALSE(std::filesystem::exists(ssh));
  EXPECT_TRUE(std::filesystem::exists(root.root() / "etc/systemd/system/ssh.service.d/override.conf"));
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/user.slice.d"));
  auto twice = unprotect_units(paths, {"ssh"});
  ASSERT_TRUE(twice.ok());
  EXPECT_FALSE((*twice)[0].changed);
}

TEST(Protect, RefusesFilesItDidNotWriteAndBadInputChangesNothing) {
  test::FixtureRoot root;
  root.write("etc/systemd/system/ssh.service.d/50-spark-tune-protect.conf", "[Service]\nMemoryMin=1G\n");
  EXPECT_FALSE(unprotect_units(root.paths(), {"ssh"}).ok());
  EXPECT_FALSE(protect_units(root.paths(), {"ssh"}, ProtectSpec{}).ok());
  EXPECT_EQ(root.read("etc/systemd/system/ssh.service.d/50-spark-tune-protect.conf"), "[Service]\nMemoryMin=1G\n");
  // One bad name: nothing is written for the good one either.
  EXPECT_FALSE(protect_units(root.paths(), {"user.slice", "x.socket"}, ProtectSpec{}).ok());
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/user.slice.d"));
}

TEST(Protect, Cli) {
  if (!have_systemd_analyze()) GTEST_SKIP() << "systemd-analyze is not installed";
  test::FixtureRoot root;
  std::string r = "--root=" + root.root().string();
  auto w = test::run_cli({r, "protect", "spark-tune.service", "--memory-min", "512M", "--json"});
  ASSERT_EQ(w.rc, 0) << w.out;
  EXPECT_TRUE(nlohmann::json::parse(w.out)["units"][0]["changed"].get<bool>());
  EXPECT_NE(root.read("etc/systemd/system/spark-tune.service.d/50-spark-tune-protect.conf").find("MemoryMin=512M"),
            std::string::npos);
  EXPECT_EQ(test::run_cli({r, "protect", "x", "--memory-min", "lots"}).rc, 2);
  EXPECT_EQ(test::run_cli({r, "protect", "x", "--oom-score-adjust", "5"}).rc, 2);
  EXPECT_EQ(test::run_cli({r, "protect"}).rc, 2);
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/x.service.d"));
  auto u = test::run_cli({r, "protect", "--undo", "spark-tune.service"});
  EXPECT_EQ(u.rc, 0) << u.out;
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/spark-tune.service.d"));
}

}  // namespace
}  // namespace spark
