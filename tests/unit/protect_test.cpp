// protect: drop-ins validated by systemd-analyze verify, written atomically, removed exactly.
#include "daemon/protect.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "state/journal.h"
#include "support/failing_actuator.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

using spark::state::Target, spark::state::TargetKind, spark::state::TargetRecord, spark::state::read_journal;

using spark::tune::HostActuator, spark::tune::Tuner;

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
  auto svc = protect_dropin_text("sshd.service", spec);
  EXPECT_EQ(svc.rfind(k_protect_marker, 0), 0u);
  EXPECT_NE(svc.find("[Service]\nMemoryMin=256M\nMemoryLow=1G\nOOMScoreAdjust=-900\nManagedOOMPreference=avoid\n"),
            std::string::npos)
      << svc;
  auto slice = protect_dropin_text("user.slice", spec);
  EXPECT_NE(slice.find("[Slice]"), std::string::npos);
  EXPECT_EQ(slice.find("OOMScoreAdjust"), std::string::npos);  // not valid in a slice
  EXPECT_EQ(protect_owner("sshd.service"), "protect:sshd.service");
}

TEST(Protect, SystemdAnalyzeAcceptsOursAndRejectsBadDropins) {
  if (!have_systemd_analyze()) GTEST_SKIP() << "systemd-analyze is not installed";
  ProtectSpec spec;
  auto ok = verify_dropin("sshd.service", protect_dropin_text("sshd.service", spec));
  EXPECT_TRUE(ok.ok()) << ok.error().what();
  EXPECT_TRUE(verify_dropin("user.slice", protect_dropin_text("user.slice", spec)).ok());
  auto bad = verify_dropin("sshd.service", "[Service]\nMemoryMin=lots\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.error().what()).find("Invalid memory limit"), std::string::npos) << bad.error().what();
  // The key the issue text names is not valid systemd syntax; ManagedOOMPreference is.
  EXPECT_FALSE(verify_dropin("sshd.service", "[Service]\nManagedOOMMemoryPressure=avoid\n").ok());
  EXPECT_FALSE(verify_dropin("user.slice", "[Slice]\nOOMScoreAdjust=-900\n").ok());
}

class ProtectTx : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_systemd_analyze()) GTEST_SKIP() << "systemd-analyze is not installed";
    std::filesystem::create_directories(root.paths().systemd_d);
  }
  bool exists(const std::string& rel) const { return std::filesystem::exists(root.root() / rel); }
  std::vector<std::string> owners() const {
    auto j = read_journal(root.paths());
    return j ? j->owner_names() : std::vector<std::string>{"(unreadable journal)"};
  }

  test::FixtureRoot root;
  HostActuator act{root.paths()};
};

TEST_F(ProtectTx, WritesThroughTheJournalAndUndoesExactly) {
  const auto& paths = root.paths();
  // A directory with the user's own drop-in: protect adds beside it, undo leaves it.
  root.write("etc/systemd/system/ssh.service.d/override.conf", "[Service]\nNice=5\n");
  auto r = protect_units(paths, act, {"ssh", "user.slice"}, ProtectSpec{});
  ASSERT_TRUE(r.ok()) << r.error().what();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_TRUE((*r)[0].changed);
  EXPECT_TRUE((*r)[1].changed);
  auto ssh = protect_dropin_path(paths, "ssh.service");
  EXPECT_EQ(read_file(ssh).value_or(""), protect_dropin_text("ssh.service", ProtectSpec{}));
  EXPECT_TRUE(exists("etc/systemd/system/user.slice.d/50-spark-tune-protect.conf"));
  EXPECT_EQ(owners(), (std::vector<std::string>{"protect:ssh.service", "protect:user.slice"}));
  // The journal holds the drop-in (absent before) and the directory (present for ssh, absent for user.slice).
  auto j = read_journal(paths);
  ASSERT_TRUE(j.ok());
  const TargetRecord* file = j->find(Target{TargetKind::file, ssh.string()});
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(file->layers.size(), 1u);
  EXPECT_FALSE(file->layers[0].previous.has_value());
  const TargetRecord* dir =
      j->find(Target{TargetKind::dir, (root.root() / "etc/systemd/system/user.slice.d").string()});
  ASSERT_NE(dir, nullptr);
  EXPECT_FALSE(dir->layers[0].previous.has_value());
  EXPECT_EQ(j->owners["protect:user.slice"]["memory_min"].get<uint64_t>(), 256ull << 20);

  // Again: nothing changes.
  auto again = protect_units(paths, act, {"ssh", "user.slice"}, ProtectSpec{});
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)[0].changed);
  // A new spec replaces the drop-in in the same layer: undo still returns to 'absent'.
  ProtectSpec bigger;
  bigger.memory_min = 2ull << 30;
  bigger.memory_low = 4ull << 30;
  auto changed = protect_units(paths, act, {"ssh"}, bigger);
  ASSERT_TRUE(changed.ok());
  EXPECT_TRUE((*changed)[0].changed);
  EXPECT_NE(read_file(ssh)->find("MemoryMin=2G"), std::string::npos);

  auto undo = unprotect_units(paths, act, {"ssh", "user.slice"});
  ASSERT_TRUE(undo.ok()) << undo.error().what();
  EXPECT_TRUE((*undo)[0].changed);
  EXPECT_FALSE(std::filesystem::exists(ssh));
  EXPECT_EQ(root.read("etc/systemd/system/ssh.service.d/override.conf"), "[Service]\nNice=5\n");
  EXPECT_FALSE(exists("etc/systemd/system/user.slice.d"));
  EXPECT_TRUE(owners().empty());
  auto twice = unprotect_units(paths, act, {"ssh"});
  ASSERT_TRUE(twice.ok());
  EXPECT_FALSE((*twice)[0].changed);
}

TEST_F(ProtectTx, RevertAllRemovesDropinsAndTheDirectoriesItMade) {
  ASSERT_TRUE(protect_units(root.paths(), act, {"sshd", "user.slice"}, ProtectSpec{}).ok());
  Tuner tuner(root.paths(), act);
  ASSERT_TRUE(tuner.revert_all().ok());
  EXPECT_FALSE(exists("etc/systemd/system/sshd.service.d"));
  EXPECT_FALSE(exists("etc/systemd/system/user.slice.d"));
  EXPECT_TRUE(owners().empty());
}

TEST_F(ProtectTx, DropinsAndTheirDirectorySurviveAReboot) {
  ASSERT_TRUE(protect_units(root.paths(), act, {"sshd"}, ProtectSpec{}).ok());
  // Reboot: the journal's kernel values are the old boot's, but the drop-in and its directory are on disk.
  root.write("proc/sys/kernel/random/boot_id", "00000000-0000-0000-0000-000000000002\n");
  auto undo = unprotect_units(root.paths(), act, {"sshd"});
  ASSERT_TRUE(undo.ok()) << undo.error().what();
  EXPECT_TRUE((*undo)[0].changed);
  EXPECT_FALSE(exists("etc/systemd/system/sshd.service.d"));
}

TEST_F(ProtectTx, AFailedWritePutsBackTheUnitsAlreadyDone) {
  const auto& paths = root.paths();
  ProtectSpec old_spec;
  ASSERT_TRUE(protect_units(paths, act, {"sshd"}, old_spec).ok());
  const std::string sshd_before = root.read("etc/systemd/system/sshd.service.d/50-spark-tune-protect.conf");
  // The third unit's drop-in cannot be written: sshd returns to its earlier drop-in, user.slice to nothing.
  test::FailingActuator failing(act, Target{TargetKind::file, protect_dropin_path(paths, "ssh.service").string()},
                                EACCES);
  ProtectSpec spec;
  spec.memory_min = 1ull << 30;
  auto r = protect_units(paths, failing, {"sshd", "user.slice", "ssh"}, spec);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("protecting ssh.service"), std::string::npos) << r.error().what();
  EXPECT_EQ(root.read("etc/systemd/system/sshd.service.d/50-spark-tune-protect.conf"), sshd_before);
  EXPECT_FALSE(exists("etc/systemd/system/user.slice.d"));
  EXPECT_FALSE(exists("etc/systemd/system/ssh.service.d"));
  EXPECT_EQ(owners(), (std::vector<std::string>{"protect:sshd.service"}));
  auto j = read_journal(paths);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->owners["protect:sshd.service"]["memory_min"].get<uint64_t>(), old_spec.memory_min);
}

TEST_F(ProtectTx, AFailedVerifyChangesNothing) {
  ProtectSpec bad;
  bad.oom_score_adjust = -5000;  // outside systemd's range: systemd-analyze complains about the drop-in
  auto r = protect_units(root.paths(), act, {"user.slice", "sshd"}, bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("systemd-analyze verify rejects"), std::string::npos)
      << r.error().what();
  EXPECT_FALSE(exists("etc/systemd/system/user.slice.d"));
  EXPECT_FALSE(exists("etc/systemd/system/sshd.service.d"));
  EXPECT_TRUE(owners().empty());
  EXPECT_FALSE(exists("var/lib/spark-tune/journal.json"));
}

TEST(Protect, RefusesFilesItDidNotWriteAndBadInputChangesNothing) {
  test::FixtureRoot root;
  HostActuator act(root.paths());
  std::filesystem::create_directories(root.paths().systemd_d);
  root.write("etc/systemd/system/ssh.service.d/50-spark-tune-protect.conf", "[Service]\nMemoryMin=1G\n");
  EXPECT_FALSE(unprotect_units(root.paths(), act, {"ssh"}).ok());
  EXPECT_FALSE(protect_units(root.paths(), act, {"ssh"}, ProtectSpec{}).ok());
  EXPECT_EQ(root.read("etc/systemd/system/ssh.service.d/50-spark-tune-protect.conf"), "[Service]\nMemoryMin=1G\n");
  // One bad name: nothing is written for the good one either.
  EXPECT_FALSE(protect_units(root.paths(), act, {"user.slice", "x.socket"}, ProtectSpec{}).ok());
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/user.slice.d"));
  // protect's own text, but not in this journal: undo names the file instead of guessing.
  root.write("etc/systemd/system/a.service.d/50-spark-tune-protect.conf",
             protect_dropin_text("a.service", ProtectSpec{}));
  auto orphan = unprotect_units(root.paths(), act, {"a"});
  ASSERT_FALSE(orphan.ok());
  EXPECT_NE(std::string(orphan.error().what()).find("remove it by hand"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(root.root() / "etc/systemd/system/a.service.d/50-spark-tune-protect.conf"));
}

TEST(Protect, Cli) {
  if (!have_systemd_analyze()) GTEST_SKIP() << "systemd-analyze is not installed";
  test::FixtureRoot root;
  std::string r = "--root=" + root.root().string();
  auto none = test::run_spark_tune({r, "protect", "sshd"});  // no systemd unit directory: says so, changes nothing
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_FALSE(std::filesystem::exists(root.paths().systemd_d));
  std::filesystem::create_directories(root.paths().systemd_d);
  auto w = test::run_spark_tune({r, "protect", "spark-tune.service", "--memory-min", "512M", "--json"});
  ASSERT_EQ(w.exit_code, 0) << w.out;
  EXPECT_TRUE(nlohmann::json::parse(w.out)["units"][0]["changed"].get<bool>());
  EXPECT_NE(root.read("etc/systemd/system/spark-tune.service.d/50-spark-tune-protect.conf").find("MemoryMin=512M"),
            std::string::npos);
  EXPECT_EQ(test::run_spark_tune({r, "protect", "x", "--memory-min", "lots"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({r, "protect", "x", "--oom-score-adjust", "5"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({r, "protect"}).exit_code, 2);
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/x.service.d"));
  auto u = test::run_spark_tune({r, "protect", "--undo", "spark-tune.service"});
  EXPECT_EQ(u.exit_code, 0) << u.out;
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/spark-tune.service.d"));
  // spark-tune revert undoes protect like any other change.
  ASSERT_EQ(test::run_spark_tune({r, "protect", "sshd", "user.slice"}).exit_code, 0);
  EXPECT_TRUE(std::filesystem::exists(root.root() / "etc/systemd/system/sshd.service.d"));
  auto rv = test::run_spark_tune({r, "revert"});
  EXPECT_EQ(rv.exit_code, 0) << rv.out;
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/sshd.service.d"));
  EXPECT_FALSE(std::filesystem::exists(root.root() / "etc/systemd/system/user.slice.d"));
}

}  // namespace
}  // namespace spark
