// Triggers (drop_caches, compact_memory, cgroup.procs, cgroup.kill, cgroup.event_control) go
// through the actuator: a dry run shows them without making them, an injected failure surfaces.
#include "tune/trigger.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fs.h"
#include "gpu/preflight.h"
#include "guard/cgroup.h"
#include "guard/process.h"
#include "support/failing_actuator.h"
#include "support/fixture.h"
#include "tune/actuator.h"
#include "tune/page_cache.h"

using spark::state::TargetKind, spark::state::sysctl_target;

using spark::tune::CacheKeeper, spark::tune::CacheKeeperOptions, spark::tune::CacheMode, spark::tune::DryRunActuator,
    spark::tune::HostActuator, spark::tune::Trigger, spark::tune::compact_memory, spark::tune::drop_caches;

using spark::gpu::PreflightRequest, spark::gpu::run_preflight;

namespace spark {
namespace {

bool planned(const DryRunActuator& dry, const std::string& text) {
  for (const auto& p : dry.planned())
    if (p.text() == text) return true;
  return false;
}

std::string planned_list(const DryRunActuator& dry) {
  std::string s;
  for (const auto& p : dry.planned()) s += p.text() + "\n";
  return s;
}

TEST(Trigger, HostActuatorWritesKernelFilesAndRefusesOwnFiles) {
  test::FixtureRoot root;
  root.write("proc/sys/vm/drop_caches", "");
  HostActuator act(root.paths());
  ASSERT_TRUE(drop_caches(act, "test", "a drop").ok());
  EXPECT_EQ(root.read("proc/sys/vm/drop_caches"), "3");
  auto missing = compact_memory(act, "test", "no such file in the fixture");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.error().what()).find("vm.compact_memory"), std::string::npos);
  EXPECT_FALSE(act.trigger({TargetKind::file, (root.root() / "x").string()}, "1").ok());
  EXPECT_FALSE(act.trigger({TargetKind::cgroup, "../escape/cgroup.procs"}, "1").ok());
}

TEST(Trigger, CacheDropsAreShownByADryRunAndNotMade) {
  test::FixtureRoot root;
  root.write("proc/sys/vm/drop_caches", "");
  root.write("model/a.bin", "weights");
  HostActuator host(root.paths());
  DryRunActuator dry(host);
  CacheKeeperOptions o;
  o.mode = CacheMode::drop;
  CacheKeeper keeper(root.paths(), dry, "window:w1", {root.root() / "model/a.bin"}, o);
  keeper.tick(std::chrono::steady_clock::now());
  EXPECT_TRUE(planned(dry, "vm.drop_caches = 3 (trigger)")) << planned_list(dry);
  EXPECT_EQ(root.read("proc/sys/vm/drop_caches"), "");
  EXPECT_EQ(keeper.stats().drops, 1u);
}

TEST(Trigger, AnInjectedDropFailureSurfaces) {
  test::FixtureRoot root;
  root.write("proc/sys/vm/drop_caches", "");
  root.write("model/a.bin", "weights");
  HostActuator host(root.paths());
  test::FailingActuator failing(host, sysctl_target("vm.drop_caches"), EACCES);
  CacheKeeperOptions o;
  o.mode = CacheMode::drop;
  CacheKeeper keeper(root.paths(), failing, "window:w1", {root.root() / "model/a.bin"}, o);
  keeper.tick(std::chrono::steady_clock::now());
  EXPECT_EQ(keeper.stats().drops, 0u);
  EXPECT_NE(keeper.stats().last_error.find("vm.drop_caches"), std::string::npos) << keeper.stats().last_error;
  EXPECT_EQ(root.read("proc/sys/vm/drop_caches"), "");
}

// A node whose free memory is all in small blocks: preflight --compact asks for compaction.
void shattered_host(const test::FixtureRoot& root) {
  root.meminfo(24ull << 20, 20ull << 20);
  root.write("proc/buddyinfo", "Node 0, zone   Normal 400000 200000 50000 20000 0 0 0 0 0 0 0\n");
  root.write("proc/sys/vm/compact_memory", "");
}

TEST(Trigger, PreflightCompactionIsShownByADryRunAndItsFailureIsAWarning) {
  test::FixtureRoot root;
  shattered_host(root);
  PreflightRequest req;
  req.bytes = 4ull << 30;
  req.page_size = 4096;
  req.compact = true;
  HostActuator host(root.paths());
  DryRunActuator dry(host);
  auto rep = run_preflight(root.paths(), req, dry);
  EXPECT_TRUE(planned(dry, "vm.compact_memory = 1 (trigger)")) << planned_list(dry);
  EXPECT_EQ(root.read("proc/sys/vm/compact_memory"), "");

  test::FailingActuator failing(host, sysctl_target("vm.compact_memory"), EPERM);
  auto failed = run_preflight(root.paths(), req, failing);
  EXPECT_FALSE(failed.compacted);
  ASSERT_FALSE(failed.warnings.empty());
  EXPECT_NE(failed.warnings[0].find("vm.compact_memory"), std::string::npos) << failed.warnings[0];
  EXPECT_EQ(root.read("proc/sys/vm/compact_memory"), "");
}

class GuardTriggers : public ::testing::Test {
 protected:
  void SetUp() override {
    root.write("sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n");
    root.write("sys/fs/cgroup/srv.slice/cgroup.procs", "");
    root.write("sys/fs/cgroup/srv.slice/cgroup.kill", "");
    root.write("sys/fs/cgroup/memory/srv/cgroup.event_control", "");
    root.write("sys/fs/cgroup/memory/srv/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
  }
  guard::CgroupBox v2_box() const {
    HostPaths p = root.paths();
    return guard::CgroupBox(p, {CgroupVersion::v2, "", p.cgroup}, "/srv.slice");
  }
  guard::CgroupBox v1_box() const {
    HostPaths p = root.paths();
    return guard::CgroupBox(p, {CgroupVersion::v1, "memory", p.cgroup / "memory"}, "/srv");
  }
  test::FixtureRoot root;
};

TEST_F(GuardTriggers, ADryRunShowsEveryCgroupWrite) {
  HostActuator host(root.paths());
  DryRunActuator dry(host);
  ASSERT_TRUE(v2_box().attach(dry, 4242).ok());
  ASSERT_TRUE(v2_box().kill_all(dry).ok());
  auto efd = guard::register_v1_event(dry, v1_box(), "memory.oom_control", "");
  ASSERT_TRUE(efd.ok()) << describe(efd.error());
  EXPECT_TRUE(planned(dry, "cgroup:srv.slice/cgroup.procs = 4242 (trigger)")) << planned_list(dry);
  EXPECT_TRUE(planned(dry, "cgroup:srv.slice/cgroup.kill = 1 (trigger)")) << planned_list(dry);
  ASSERT_EQ(dry.planned().size(), 3u);
  EXPECT_EQ(dry.planned()[2].target.name, "memory/srv/cgroup.event_control");
  EXPECT_EQ(root.read("sys/fs/cgroup/srv.slice/cgroup.procs"), "");
  EXPECT_EQ(root.read("sys/fs/cgroup/srv.slice/cgroup.kill"), "");
  EXPECT_EQ(root.read("sys/fs/cgroup/memory/srv/cgroup.event_control"), "");
}

TEST_F(GuardTriggers, InjectedFailuresSurfaceAsErrors) {
  HostActuator host(root.paths());
  auto procs = v2_box().file_target("cgroup.procs");
  test::FailingActuator no_procs(host, procs, EACCES);
  auto a = v2_box().attach(no_procs, 4242);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code().value(), EACCES);
  test::FailingActuator gone(host, procs, ESRCH);
  auto g = v2_box().attach(gone, 4242);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(std::string(g.error().what()).find("exited"), std::string::npos);

  test::FailingActuator no_event(host, v1_box().file_target("cgroup.event_control"), EINVAL);
  auto e = guard::register_v1_event(no_event, v1_box(), "memory.oom_control", "");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code().value(), EINVAL);
  EXPECT_NE(std::string(e.error().what()).find("memory.oom_control"), std::string::npos);
}

TEST_F(GuardTriggers, AFailedCgroupKillFallsBackToKillingEachMember) {
  HostActuator host(root.paths());
  test::FailingActuator no_kill(host, v2_box().file_target("cgroup.kill"), EACCES);
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  root.write("sys/fs/cgroup/srv.slice/cgroup.procs", std::to_string(child) + "\n");
  // The fixture's member list never empties, so the fallback reports the survivor after killing it.
  auto r = v2_box().kill_all(no_kill);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(root.read("sys/fs/cgroup/srv.slice/cgroup.kill"), "");
}

TEST_F(GuardTriggers, ARestartedServerJoinsTheBoxThroughTheActuatorBeforeItRuns) {
  HostActuator host(root.paths());
  guard::ServerLaunch launch;
  launch.argv = {"/bin/true"};
  launch.uid = ::getuid();
  launch.gid = ::getgid();
  test::FailingActuator failing(host, v2_box().file_target("cgroup.procs"), EACCES);
  auto refused = guard::spawn_in_box(launch, v2_box(), failing);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code().value(), EACCES);
  EXPECT_NE(std::string(refused.error().what()).find("joining the guard's cgroup"), std::string::npos);

  auto pid = guard::spawn_in_box(launch, v2_box(), host);
  ASSERT_TRUE(pid.ok()) << describe(pid.error());
  int status = 0;
  ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(root.read("sys/fs/cgroup/srv.slice/cgroup.procs"), std::to_string(*pid));
}

}  // namespace
}  // namespace spark
