#include <gtest/gtest.h>

#include <thread>

#include "core/fs.h"
#include "state/journal.h"
#include "support/failing_actuator.h"
#include "support/fixture.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

using spark::state::JournalTxn, spark::state::Target, spark::state::TargetKind, spark::state::read_journal,
    spark::state::sysctl_target, spark::state::sysfs_target;

using spark::tune::HostActuator, spark::tune::Tuner;

namespace spark {
namespace {

class TunerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root.write("proc/sys/vm/min_free_kbytes", "67584\n");
    root.write("proc/sys/vm/dirty_ratio", "20\n");
    root.write("proc/sys/vm/dirty_background_ratio", "10\n");
    root.write("proc/sys/vm/dirty_bytes", "0\n");
    root.write("proc/sys/vm/dirty_background_bytes", "0\n");
    root.write("proc/sys/vm/vfs_cache_pressure", "100\n");
    root.write("sys/block/loop0/queue/read_ahead_kb", "128\n");
    root.write("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n");
  }
  std::string vm(const std::string& k) { return trim(root.read("proc/sys/vm/" + k)); }
  std::string ra() { return trim(root.read("sys/block/loop0/queue/read_ahead_kb")); }

  test::FixtureRoot root;
  HostActuator act{root.paths()};
  Tuner tuner{root.paths(), act};
};

TEST_F(TunerTest, AppliesJournalsFirstAndRevertsExactly) {
  auto r = tuner.apply("profile", {{sysctl_target("vm.min_free_kbytes"), "1048576", "reserve"},
                                   {sysctl_target("vm.dirty_ratio"), "5", "dirty"}});
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(vm("min_free_kbytes"), "1048576");
  EXPECT_EQ(vm("dirty_ratio"), "5");
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  // dirty_ratio's coupled sibling dirty_bytes is recorded too (the kernel zeroes one of the pair).
  ASSERT_EQ(j->targets.size(), 3u);
  EXPECT_EQ(j->targets[2].target.name, "vm.dirty_bytes");
  EXPECT_EQ(*j->targets[0].layers[0].previous, "67584");
  EXPECT_EQ(fs::status(root.paths().journal_file()).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  ASSERT_TRUE(tuner.revert_all().ok());
  EXPECT_EQ(vm("min_free_kbytes"), "67584");
  EXPECT_EQ(vm("dirty_ratio"), "20");
  EXPECT_FALSE(fs::exists(root.paths().journal_file()));
  // Nothing else left in the state directory either: the spare journal (written into by each
  // commit so that no block is freed) goes with the journal (issue 13).
  for (const auto& e : fs::directory_iterator(root.paths().state))
    EXPECT_TRUE(e.path().filename() == "lock") << "left in the state directory: " << e.path();
  // Idempotent: a second revert has nothing to do and succeeds.
  ASSERT_TRUE(tuner.revert_all().ok());
}

TEST_F(TunerTest, InjectedFailureInTheMiddleUndoesInReverse) {
  test::FailingActuator failing(act, sysctl_target("vm.dirty_ratio"), EINVAL);
  Tuner t(root.paths(), failing);
  auto r = t.apply("profile", {{sysctl_target("vm.min_free_kbytes"), "1048576", ""},
                               {sysctl_target("vm.vfs_cache_pressure"), "200", ""},
                               {sysctl_target("vm.dirty_ratio"), "5", ""},
                               {sysctl_target("vm.dirty_background_ratio"), "2", ""}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), EINVAL);
  EXPECT_NE(std::string(r.error().what()).find("vm.dirty_ratio"), std::string::npos);
  EXPECT_EQ(vm("min_free_kbytes"), "67584");
  EXPECT_EQ(vm("vfs_cache_pressure"), "100");
  EXPECT_EQ(vm("dirty_ratio"), "20");
  EXPECT_EQ(vm("dirty_background_ratio"), "10");
  EXPECT_FALSE(fs::exists(root.paths().journal_file()));
}

TEST_F(TunerTest, UnreadableTargetFailsBeforeAnyWrite) {
  auto r = tuner.apply(
      "profile", {{sysctl_target("vm.min_free_kbytes"), "1048576", ""}, {sysctl_target("vm.no_such_key"), "1", ""}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("vm.no_such_key"), std::string::npos);
  EXPECT_EQ(vm("min_free_kbytes"), "67584");
}

TEST_F(TunerTest, CrashAfterJournalBeforeWritesIsRevertedFromTheJournal) {
  // Simulate a crash: the journal records the plan, the kernel got only the first write.
  {
    auto txn = JournalTxn::begin(root.paths());
    ASSERT_TRUE(txn.ok());
    txn->data().targets.push_back({sysctl_target("vm.min_free_kbytes"), {{"profile", "67584", "1048576", ""}}});
    txn->data().targets.push_back({sysctl_target("vm.dirty_ratio"), {{"profile", "20", "5", ""}}});
    ASSERT_TRUE(txn->commit().ok());
  }
  root.write("proc/sys/vm/min_free_kbytes", "1048576\n");
  ASSERT_TRUE(tuner.revert_all().ok());
  EXPECT_EQ(vm("min_free_kbytes"), "67584");
  EXPECT_EQ(vm("dirty_ratio"), "20");
}

TEST_F(TunerTest, SecondApplyKeepsFirstOriginalsAndReplaceReleasesTheRest) {
  ASSERT_TRUE(tuner
                  .apply("profile",
                         {{sysctl_target("vm.min_free_kbytes"), "1048576", ""},
                          {sysctl_target("vm.vfs_cache_pressure"), "200", ""}},
                         {true})
                  .ok());
  ASSERT_TRUE(tuner.apply("profile", {{sysctl_target("vm.min_free_kbytes"), "2097152", ""}}, {true}).ok());
  EXPECT_EQ(vm("min_free_kbytes"), "2097152");
  EXPECT_EQ(vm("vfs_cache_pressure"), "100");  // B does not name it: back to the original
  ASSERT_TRUE(tuner.revert_all().ok());
  EXPECT_EQ(vm("min_free_kbytes"), "67584");
}

TEST_F(TunerTest, WindowOverProfileRestoresTheProfileValue) {
  auto a = tuner.apply("profile", {{sysctl_target("vm.dirty_ratio"), "5", ""}});
  ASSERT_TRUE(a.ok()) << a.error().what();
  ASSERT_TRUE(tuner.apply("window:w1", {{sysctl_target("vm.dirty_ratio"), "2", ""}}).ok());
  EXPECT_EQ(vm("dirty_ratio"), "2");
  ASSERT_TRUE(tuner.release("window:w1").ok());
  EXPECT_EQ(vm("dirty_ratio"), "5");
  ASSERT_TRUE(tuner.revert_all().ok());
  EXPECT_EQ(vm("dirty_ratio"), "20");
}

TEST_F(TunerTest, OverlappingWindowsRestoreInEitherEndOrder) {
  for (bool first_ends_first : {true, false}) {
    Target ra_t = sysfs_target("block/loop0/queue/read_ahead_kb");
    ASSERT_TRUE(tuner.apply("window:a", {{ra_t, "16", ""}}).ok());
    ASSERT_TRUE(tuner.apply("window:b", {{ra_t, "32", ""}}).ok());
    EXPECT_EQ(ra(), "32");
    ASSERT_TRUE(tuner.release(first_ends_first ? "window:a" : "window:b").ok());
    EXPECT_EQ(ra(), first_ends_first ? "32" : "16");
    ASSERT_TRUE(tuner.release(first_ends_first ? "window:b" : "window:a").ok());
    EXPECT_EQ(ra(), "128");
    EXPECT_FALSE(fs::exists(root.paths().journal_file()));
  }
}

TEST_F(TunerTest, ReadsBracketedSysfsChoices) {
  auto v = act.read(sysfs_target("kernel/mm/transparent_hugepage/enabled"));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(**v, "madvise");
}

TEST_F(TunerTest, RefusesPathsAndSymlinkedEscapes) {
  for (const char* bad :
       {"vm/../../etc/passwd", "vm..dirty_ratio", "../vm.dirty_ratio", "vm.dirty_ratio/", ".vm", "vm."}) {
    auto r = tuner.apply("profile", {{sysctl_target(bad), "1", ""}});
    EXPECT_FALSE(r.ok()) << bad;
  }
  root.write("outside/secret", "0\n");
  fs::create_directories(root.root() / "proc/sys/evil");
  fs::create_symlink(root.root() / "outside", root.root() / "proc/sys/evil/link");
  auto r = tuner.apply("profile", {{sysctl_target("evil.link.secret"), "1", ""}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("escape"), std::string::npos);
  EXPECT_EQ(root.read("outside/secret"), "0\n");
  auto s = tuner.apply("window:x", {{sysfs_target("block/../../outside/secret"), "1", ""}});
  EXPECT_FALSE(s.ok());
}

TEST_F(TunerTest, EarlierBootKernelValuesAreNotRestoredButFilesAre) {
  fs::path dropin = root.paths().sysctl_d / "90-spark-tune.conf";
  ASSERT_TRUE(tuner
                  .apply("profile", {{sysctl_target("vm.dirty_ratio"), "5", ""},
                                     {Target{TargetKind::file, dropin.string()}, "vm.dirty_ratio = 5\n", ""}})
                  .ok());
  EXPECT_TRUE(fs::exists(dropin));
  // Reboot: a new boot id; the kernel starts with the distribution's value again.
  root.write("proc/sys/kernel/random/boot_id", "00000000-0000-0000-0000-000000000002\n");
  root.write("proc/sys/vm/dirty_ratio", "30\n");
  ASSERT_TRUE(tuner.revert_all().ok());
  EXPECT_EQ(vm("dirty_ratio"), "30");  // not 'restored' to the old boot's 20
  EXPECT_FALSE(fs::exists(dropin));    // the persistent drop-in is removed
}

TEST_F(TunerTest, AfterARebootCgroupDirsAreForgottenButDropinDirsAreKept) {
  fs::path cg = root.paths().cgroup / "memory/spark/g1";
  fs::path dropin_dir = root.paths().systemd_d / "sshd.service.d";
  fs::create_directories(cg.parent_path());
  fs::create_directories(dropin_dir.parent_path());
  ASSERT_TRUE(tuner.apply("guard:g1", {{Target{TargetKind::dir, cg.string()}, std::string(), ""}}).ok());
  ASSERT_TRUE(
      tuner.apply("protect:sshd.service", {{Target{TargetKind::dir, dropin_dir.string()}, std::string(), ""}}).ok());
  root.write("proc/sys/kernel/random/boot_id", "00000000-0000-0000-0000-000000000002\n");
  auto dropped = tuner.forget_earlier_boot();
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 1u);  // the cgroup: the kernel made it, the reboot removed it
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->find(Target{TargetKind::dir, cg.string()}), nullptr);
  ASSERT_NE(j->find(Target{TargetKind::dir, dropin_dir.string()}), nullptr);
  ASSERT_TRUE(tuner.release("protect:sshd.service").ok());
  EXPECT_FALSE(fs::exists(dropin_dir));
}

TEST_F(TunerTest, FileTextComparesExactlyNotAsAKernelValue) {
  // "[Service]" in a drop-in is text, not the kernel's "[selected]" notation.
  fs::path f = root.root() / "etc/systemd/system/a.service.d/x.conf";
  ASSERT_TRUE(tuner.apply("protect:a", {{Target{TargetKind::file, f.string()}, "[Service]\nMemoryMin=1G\n", ""}}).ok());
  auto r = tuner.apply("protect:a", {{Target{TargetKind::file, f.string()}, "[Service]\nMemoryMin=2G\n", ""}});
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_TRUE((*r)[0].written);
  EXPECT_EQ(root.read("etc/systemd/system/a.service.d/x.conf"), "[Service]\nMemoryMin=2G\n");
}

TEST_F(TunerTest, FileAndDirTargetsCreateAndRemove) {
  fs::path d = root.root() / "cg/guard1";
  fs::create_directories(d.parent_path());
  ASSERT_TRUE(tuner.apply("guard:g1", {{Target{TargetKind::dir, d.string()}, std::string(), ""}}).ok());
  EXPECT_TRUE(fs::is_directory(d));
  ASSERT_TRUE(tuner.release("guard:g1").ok());
  EXPECT_FALSE(fs::exists(d));
}

}  // namespace
}  // namespace spark

namespace spark {
namespace {

// A journal holding only this boot's kernel values is renamed into place without fsync (the
// agent's loop never waits for the disk on a window's begin or end). A power loss before it
// reached the disk leaves an empty file: that is an empty journal (the values went with the
// boot), not a damaged one that stops every later apply and the agent's start.
TEST_F(TunerTest, AnEmptyJournalFileLeftByAPowerLossIsAnEmptyJournal) {
  root.write("var/lib/spark-tune/journal.json", "");
  auto d = read_journal(root.paths());
  ASSERT_TRUE(d.ok()) << d.error().what();
  EXPECT_TRUE(d->empty());
  HostActuator act(root.paths());
  Tuner tuner(root.paths(), act);
  ASSERT_TRUE(tuner.apply("window:w1", {{sysctl_target("vm.dirty_ratio"), std::string("5"), ""}}).ok());
  EXPECT_EQ(vm("dirty_ratio"), "5");
  ASSERT_TRUE(tuner.release("window:w1").ok());
  EXPECT_EQ(vm("dirty_ratio"), "20");
}

// The agent's Tuner keeps the journal it last read or wrote (JournalCache, issue 13: window.list
// parsed the whole journal per request). What another process writes meanwhile (a CLI apply
// beside the agent) is seen by the next read and by the next transaction: no layer is lost.
TEST_F(TunerTest, TheCachedJournalSeesWhatAnotherProcessWrote) {
  ASSERT_TRUE(tuner.apply("window:w1", {{sysctl_target("vm.dirty_ratio"), std::string("5"), ""}}).ok());
  auto first = tuner.journal();
  ASSERT_TRUE(first.ok()) << first.error().what();
  ASSERT_EQ((*first)->targets.size(), 2u);  // dirty_ratio and its sibling dirty_bytes
  auto again = tuner.journal();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(first->get(), again->get()) << "the file did not change: the same parsed journal, not a new parse";

  HostActuator other_act(root.paths());
  Tuner other(root.paths(), other_act);  // another process: its own cache
  ASSERT_TRUE(other.apply("profile", {{sysctl_target("vm.min_free_kbytes"), std::string("1048576"), ""}}).ok());
  auto seen = tuner.journal();
  ASSERT_TRUE(seen.ok());
  EXPECT_EQ((*seen)->targets.size(), 3u) << "the other process's change is read";
  EXPECT_EQ((*first)->targets.size(), 2u) << "a snapshot handed out earlier does not change under its reader";

  // A transaction through the cache starts from the file as it is: the profile's layer survives.
  ASSERT_TRUE(tuner.release("window:w1").ok());
  EXPECT_EQ(vm("dirty_ratio"), "20");
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  ASSERT_EQ(j->targets.size(), 1u);
  EXPECT_EQ(j->targets[0].target.name, "vm.min_free_kbytes");
  EXPECT_EQ(vm("min_free_kbytes"), "1048576");
  // And the cache holds what it committed, byte for byte (the spare's padding included): reading
  // the file back is no new parse.
  ASSERT_TRUE(tuner.set_owner_state("window:w9", nlohmann::json{{"note", "x"}}).ok());
  auto after = tuner.journal();
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE((*after)->owners.contains("window:w9"));
  EXPECT_EQ(after->get(), tuner.journal()->get()) << "the committed bytes are what the file holds";
  ASSERT_TRUE(tuner.set_owner_state("window:w9", nullptr).ok());
  ASSERT_TRUE(other.revert_all().ok());
  EXPECT_EQ(vm("min_free_kbytes"), "67584");
  auto none = tuner.journal();
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE((*none)->empty()) << "the journal removed by the other process reads as empty";
}

TEST(TunerConcurrency, ConcurrentRunsAreSerialisedByTheLock) {
  test::FixtureRoot root;
  root.write("proc/sys/vm/swappiness", "60\n");
  root.write("proc/sys/vm/vfs_cache_pressure", "100\n");
  auto worker = [&](const std::string& owner, const std::string& key, int base) {
    HostActuator act(root.paths());
    Tuner t(root.paths(), act);
    for (int i = 0; i < 40; ++i) {
      ASSERT_TRUE(t.apply(owner, {{sysctl_target(key), std::to_string(base + i), ""}}).ok());
      if (i % 2 == 0) {
        ASSERT_TRUE(t.release(owner).ok());
      }
    }
  };
  std::thread a(worker, "window:a", "vm.swappiness", 1);
  std::thread b(worker, "window:b", "vm.vfs_cache_pressure", 101);
  a.join();
  b.join();
  // Each thread's last round applied without releasing: both layers must be in the journal,
  // neither lost to the other's read-modify-write.
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->targets.size(), 2u);
  HostActuator act(root.paths());
  Tuner t(root.paths(), act);
  ASSERT_TRUE(t.revert_all().ok());
  EXPECT_EQ(trim(root.read("proc/sys/vm/swappiness")), "60");
  EXPECT_EQ(trim(root.read("proc/sys/vm/vfs_cache_pressure")), "100");
}

}  // namespace
}  // namespace spark
