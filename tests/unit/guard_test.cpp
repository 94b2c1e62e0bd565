// Guard logic on fake trees: cgroup v2 files written and read (memory.high/max/oom.group,
// memory.events), v1 names, /proc/<pid>/cgroup parsing, budgets, the growth watch's timing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "core/fs.h"
#include "guard/budget.h"
#include "guard/cgroup.h"
#include "guard/growth.h"
#include "guard/process.h"
#include "guard/supervisor.h"
#include "guard/unit.h"
#include "state/journal.h"
#include "support/failing_actuator.h"
#include "support/fixture.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

using spark::state::Target, spark::state::TargetKind, spark::state::read_journal, spark::state::sysctl_target;

using spark::tune::Actuator, spark::tune::ApplyOptions, spark::tune::HostActuator, spark::tune::Tuner;

namespace spark::guard {
namespace {

using namespace std::chrono_literals;

TEST(GuardCgroup, ParsesMemoryEvents) {
  auto e = parse_memory_events("low 0\nhigh 17\nmax 4\noom 2\noom_kill 1\noom_group_kill 1\n");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->high, 17u);
  EXPECT_EQ(e->max, 4u);
  EXPECT_EQ(e->oom, 2u);
  EXPECT_EQ(e->oom_kill, 1u);
  EXPECT_EQ(e->oom_group_kill, 1u);
  // Older kernels have no oom_group_kill; missing keys are 0.
  auto old = parse_memory_events("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->oom_group_kill, 0u);
  EXPECT_FALSE(parse_memory_events("oom_kill lots\n").ok());
}

TEST(GuardCgroup, StatValueMatchesWholeKeys) {
  std::string stat = "rss 100\nrss_huge 5\ntotal_rss 300\n";
  EXPECT_EQ(stat_value(stat, "rss"), 100u);
  EXPECT_EQ(stat_value(stat, "total_rss"), 300u);
  EXPECT_FALSE(stat_value(stat, "cache").has_value());
}

TEST(GuardCgroup, FindsTheMemoryCgroupOfAProcess) {
  test::FixtureRoot root;
  root.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  root.write("proc/self/cgroup", "9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n");
  auto h = find_memory_hierarchy(root.paths());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, CgroupVersion::v1);
  EXPECT_EQ(*memory_cgroup_of(root.paths(), *h, 0), "/process_api/abc");
  auto missing = memory_cgroup_of(root.paths(), *h, 4242);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code().value(), ESRCH);

  test::FixtureRoot v2;
  v2.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
  v2.write("proc/77/cgroup", "0::/system.slice/llama.service\n");
  auto h2 = find_memory_hierarchy(v2.paths());
  ASSERT_TRUE(h2.ok());
  EXPECT_EQ(h2->version, CgroupVersion::v2);
  EXPECT_EQ(*memory_cgroup_of(v2.paths(), *h2, 77), "/system.slice/llama.service");

  test::FixtureRoot none;
  none.write("sys/fs/cgroup/cgroup.controllers", "cpu io pids\n");
  EXPECT_FALSE(find_memory_hierarchy(none.paths()).ok());
}

TEST(GuardCgroup, LimitChangesNameTheRightFilesPerVersion) {
  test::FixtureRoot root;
  HostPaths p = root.paths();
  CgroupBox v1(p, {CgroupVersion::v1, "memory", p.cgroup / "memory"}, "/a/spark-guard-g1");
  auto c1 = v1.limit_changes({4097 * 1024, 1ull << 30, true}, "r");
  ASSERT_EQ(c1.size(), 2u);
  EXPECT_EQ(c1[0].target.name, "memory/a/spark-guard-g1/memory.limit_in_bytes");
  EXPECT_EQ(*c1[0].value, std::to_string(1ull << 30));
  EXPECT_EQ(c1[1].target.name, "memory/a/spark-guard-g1/memory.soft_limit_in_bytes");
  EXPECT_EQ(*c1[1].value, std::to_string(4097 * 1024 / 4096 * 4096));  // page-rounded like the kernel
  EXPECT_EQ(v1.dir_target().kind, TargetKind::dir);
  EXPECT_EQ(v1.dir(), p.cgroup / "memory/a/spark-guard-g1");

  CgroupBox v2(p, {CgroupVersion::v2, "", p.cgroup}, "/a/spark-guard-g1");
  auto c2 = v2.limit_changes({900ull << 20, 1ull << 30, true}, "r");
  ASSERT_EQ(c2.size(), 3u);
  EXPECT_EQ(c2[0].target.name, "a/spark-guard-g1/memory.high");
  EXPECT_EQ(c2[1].target.name, "a/spark-guard-g1/memory.max");
  EXPECT_EQ(c2[2].target.name, "a/spark-guard-g1/memory.oom.group");
  EXPECT_EQ(*c2[2].value, "1");
}

TEST(GuardBudget, ParsesAndResolvesRelativeToTheHost) {
  MemInfo small = MemInfo::of(46ull << 30, 20ull << 30), big = MemInfo::of(128ull << 30, 100ull << 30);
  auto def = parse_budget("");
  ASSERT_TRUE(def.ok());
  EXPECT_EQ(resolve_budget(*def, small), page_round((20ull << 30) * 3 / 10));  // 30% of 20 GiB < 8 GiB
  EXPECT_EQ(resolve_budget(*def, big), 8ull << 30);                            // capped at 8 GiB
  auto pct = parse_budget("30% of available");
  ASSERT_TRUE(pct.ok());
  EXPECT_EQ(resolve_budget(*pct, big), page_round(static_cast<uint64_t>((100ull << 30) * 0.3)));
  auto ram = parse_budget("10% of ram");
  ASSERT_TRUE(ram.ok());
  EXPECT_EQ(resolve_budget(*ram, small), page_round(static_cast<uint64_t>((46ull << 30) * 0.1)));
  auto abs = parse_budget("2G");
  ASSERT_TRUE(abs.ok());
  EXPECT_EQ(resolve_budget(*abs, small), 2ull << 30);
  EXPECT_FALSE(parse_budget("30% of swap").ok());
  EXPECT_FALSE(parse_budget("150%").ok());
  EXPECT_FALSE(parse_budget("lots").ok());
  EXPECT_FALSE(parse_budget("0").ok());
}

// 64 MiB/s against a 1 GiB budget, sampled every 100 ms: the first warning must come at least 5 s
// before the limit (the target), and not before growth starts.
TEST(GuardGrowth, WarnsWellAheadAtSixtyFourMiBPerSecond) {
  GrowthWatch w({}, 100ull << 20, (100ull << 20) + (1ull << 30));
  auto t0 = std::chrono::steady_clock::now();
  std::optional<double> first;
  for (int i = 0; i < 50; ++i)  // 5 s flat: no warning
    EXPECT_FALSE(w.add({t0 + i * 100ms, 100ull << 20, 20ull << 30}).has_value());
  double rate = 64.0 * 1024 * 1024;
  double limit_at = 5.0 + (1ull << 30) / rate;  // seconds
  for (int i = 50; i < 250; ++i) {
    double t = i * 0.1;
    uint64_t anon = (100ull << 20) + static_cast<uint64_t>((t - 5.0) * rate);
    if (anon >= (100ull << 20) + (1ull << 30)) break;
    auto warn = w.add({t0 + std::chrono::milliseconds(i * 100), anon, 20ull << 30});
    if (warn && !first) {
      first = t;
      EXPECT_EQ(warn->reason, "eta");
      EXPECT_GT(warn->rate, rate / 4);  // the fit window still holds flat samples
      EXPECT_GT(warn->eta_s, 5.0);
    }
  }
  ASSERT_TRUE(first.has_value());
  EXPECT_GE(limit_at - *first, 5.0) << "warning lead " << (limit_at - *first) << " s";
}

TEST(GuardGrowth, WarnsAtEightyPercentWithoutGrowthAndOnceUntilItChanges) {
  GrowthConfig cfg;
  cfg.repeat = 10s;
  GrowthWatch w(cfg, 0, 1000ull << 20);
  auto t0 = std::chrono::steady_clock::now();
  // A load spike to 85% that then stays flat: one budget warning, not one per sample.
  int warnings = 0;
  for (int i = 0; i < 40; ++i) {
    auto r = w.add({t0 + i * 100ms, 850ull << 20, 20ull << 30});
    if (r) {
      ++warnings;
      EXPECT_EQ(r->reason, "budget_80pct");
      EXPECT_EQ(r->left, 150ull << 20);
    }
  }
  EXPECT_EQ(warnings, 1);
  // Still there 10 s later: announced again.
  EXPECT_TRUE(w.add({t0 + 14s, 850ull << 20, 20ull << 30}).has_value());
}

TEST(GuardGrowth, WarnsOnHostExhaustionWithoutALimit) {
  GrowthWatch w({}, 0, 0);
  auto t0 = std::chrono::steady_clock::now();
  std::optional<GrowthWarning> got;
  for (int i = 0; i < 30 && !got; ++i)  // 100 MiB/s with 1 GiB left on the host
    got = w.add({t0 + i * 100ms, static_cast<uint64_t>(i) * (10ull << 20), (1ull << 30) - i * (10ull << 20)});
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->reason, "host_eta");
  EXPECT_LT(got->host_eta_s, 30.0);
}

TEST(GuardProcess, ParsesPortAddressesAndResolvesExecutables) {
  auto a = parse_port_address("127.0.0.1:8080");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->port, 8080);
  auto v6 = parse_port_address("[::1]:9000");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->text(), "[::1]:9000");
  EXPECT_FALSE(parse_port_address("8080").ok());
  EXPECT_FALSE(parse_port_address("localhost:0").ok());
  EXPECT_FALSE(parse_port_address("localhost:70000").ok());
  EXPECT_TRUE(resolve_executable("true").ok());
  test::FixtureRoot root;
  root.write("data.txt", "x\n");  // 0644
  auto bad = resolve_executable((root.root() / "data.txt").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.error().what()).find("not an executable"), std::string::npos);
  EXPECT_EQ(split_command("curl -s  http://x/drain"), (std::vector<std::string>{"curl", "-s", "http://x/drain"}));
}

TEST(GuardProcess, AHookThatIgnoresItsStdinDoesNotKillUsWithSigpipe) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[0]);                                                      // the hook exited without reading
  auto r = write_without_sigpipe(p[1], "{\"type\":\"oom_kill\"}\n");  // default SIGPIPE would kill the test
  ::close(p[1]);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), EPIPE);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGPIPE)) << "the SIGPIPE was left pending";
}

TEST(GuardProcess, HookGetsTheEventOnStdinAndInItsEnvironment) {
  test::FixtureRoot root;
  fs::path out = root.root() / "hook.out";
  // No shell: /usr/bin/env prints the environment; stdin is checked with a second hook (tee).
  auto env = resolve_executable("env");
  auto tee = resolve_executable("tee");
  if (!env || !tee) GTEST_SKIP() << "env/tee missing";
  auto h = spawn_hook({*tee, out.string()}, "{\"type\":\"oom_kill\",\"pid\":42}");
  ASSERT_TRUE(h.ok()) << h.error().what();
  int status = 0;
  ASSERT_EQ(::waitpid(h->pid, &status, 0), h->pid);
  EXPECT_EQ(trim(root.read("hook.out")), "{\"type\":\"oom_kill\",\"pid\":42}");
  fs::path envout = root.root() / "env.out";
  int fd = ::open(envout.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::fflush(stdout);  // what gtest buffered must not land in the hook's file
  int saved = ::dup(STDOUT_FILENO);
  ::dup2(fd, STDOUT_FILENO);
  auto e = spawn_hook({*env}, "{\"type\":\"oom_kill\"}");
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  ::close(fd);
  ASSERT_TRUE(e.ok());
  ::waitpid(e->pid, &status, 0);
  EXPECT_NE(root.read("env.out").find("SPARK_TUNE_EVENT={\"type\":\"oom_kill\"}"), std::string::npos);
}

// A fake cgroupfs: making a directory populates it with the control files the kernel would show
// (cgroup v2 defaults); removing it removes them. Everything else is the real HostActuator.
class FakeCgroupfs : public Actuator {
 public:
  explicit FakeCgroupfs(HostPaths p) : inner_(p) {}
  Result<std::optional<std::string>> read(const Target& t) override { return inner_.read(t); }
  Result<void> trigger(const Target& t, const std::string& v) override { return inner_.trigger(t, v); }
  Result<void> write(const Target& t, const std::optional<std::string>& v) override {
    if (t.kind != TargetKind::dir) return inner_.write(t, v);
    std::error_code ec;
    if (!v) {
      fs::remove_all(t.name, ec);
      return {};
    }
    fs::create_directories(t.name, ec);
    auto put = [&](const char* f, const char* c) { (void)atomic_write(fs::path(t.name) / f, c); };
    put("cgroup.procs", "");
    put("cgroup.kill", "");
    put("memory.max", "max\n");
    put("memory.high", "max\n");
    put("memory.oom.group", "0\n");
    put("memory.current", "104857600\n");
    put("memory.stat", "anon 94371840\nfile 10485760\n");
    put("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
    put("memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
    return {};
  }

 private:
  HostActuator inner_;
};

class GuardV2FakeTree : public ::testing::Test {
 protected:
  void SetUp() override {
    root.meminfo(48 * 1024 * 1024, 20 * 1024 * 1024);
    root.write("sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n");
    root.write("sys/fs/cgroup/agent.slice/cgroup.procs", "");
    root.write("sys/fs/cgroup/agent.slice/cgroup.subtree_control", "memory pids\n");
    root.write("sys/fs/cgroup/srv.slice/cgroup.procs", "");
    root.write("proc/self/cgroup", "0::/agent.slice\n");
    // A real process (pidfds are real) described by the fake /proc.
    child = ::fork();
    if (child == 0) {
      ::pause();
      ::_exit(0);
    }
    std::string p = "proc/" + std::to_string(child) + "/";
    root.write(p + "stat", std::to_string(child) + " (llama-server) S 1 1 1 0\n");
    root.write(p + "cgroup", "0::/srv.slice\n");
    root.write(p + "statm", "1000 25600 0 0 0 0 0\n");  // 100 MiB resident
    root.write(p + "comm", "llama-server\n");
    root.write(p + "cmdline", std::string("/bin/sleep\0"
                                          "1000\0",
                                          16));
    root.write(p + "status", "Name:\tllama-server\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n");
  }
  void TearDown() override {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }
  // What most tests' supervisors share: a sample at every tick, every event kept in `events`.
  static SupervisorConfig every_tick() {
    SupervisorConfig cfg;
    cfg.sample_interval = 0ms;
    return cfg;
  }
  EventSink record() {
    return [this](const Event& e) { events.push_back(e); };
  }
  // A guard of the fixture's server with this budget.
  GuardOptions guard_of_child(const std::string& budget) const {
    GuardOptions o;
    o.pid = child;
    o.budget = budget;
    return o;
  }
  test::FixtureRoot root;
  FakeCgroupfs act{root.paths()};
  Tuner tuner{root.paths(), act};
  std::vector<Event> events;
  pid_t child = -1;
  const std::string box = "sys/fs/cgroup/agent.slice/spark-guard-g1/";  // the first guard's cgroup
};

// A guard given no --memory-high writes no memory.high: a derived one (90% of the budget, the old
// default) throttled a growing server without swap below memory.max, so the kernel never killed it
// and the guard never restarted it (Debian 13 guest: 962 `high` events in 90 s, no OOM). One given
// is written, never above memory.max.
TEST_F(GuardV2FakeTree, MemoryHighIsWrittenOnlyWhenAskedAndNeverAboveMemoryMax) {
  {
    GuardSupervisor sup(root.paths(), tuner, record(), every_tick());
    GuardOptions o = guard_of_child("4G");
    o.memory_max = 512ull << 20;
    auto id = sup.add(o);
    ASSERT_TRUE(id.ok()) << id.error().what();
    EXPECT_EQ(std::stoull(trim(root.read(box + "memory.max"))), 512ull << 20);
    EXPECT_EQ(trim(root.read(box + "memory.high")), "max") << "memory.high written though not asked for";
    ASSERT_TRUE(sup.end(*id).ok());
  }
  GuardSupervisor sup(root.paths(), tuner, record(), every_tick());
  // --memory-high above the limit the budget gives (footprint 100 MiB + 256 MiB): clamped to it.
  GuardOptions o = guard_of_child("256M");
  o.memory_high = 1ull << 30;
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  const std::string box2 = "sys/fs/cgroup/agent.slice/spark-guard-" + *id + "/";
  uint64_t max = std::stoull(trim(root.read(box2 + "memory.max")));
  EXPECT_EQ(max, (100ull << 20) + (256ull << 20));
  EXPECT_EQ(std::stoull(trim(root.read(box2 + "memory.high"))), max) << "memory.high above memory.max";
  ASSERT_TRUE(sup.end(*id).ok());
}

TEST_F(GuardV2FakeTree, WritesLimitsWatchesMemoryEventsAndRestoresOnEnd) {
  GuardSupervisor sup(root.paths(), tuner, record(), every_tick());
  GuardOptions o = guard_of_child("1G");
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  EXPECT_EQ(*id, "g1");
  EXPECT_EQ(trim(root.read(box + "cgroup.procs")), std::to_string(child));
  // Footprint 100 MiB (memory.current) + 1 GiB budget; no memory.high unless asked.
  EXPECT_EQ(trim(root.read(box + "memory.max")), std::to_string((100ull << 20) + (1ull << 30)));
  EXPECT_EQ(trim(root.read(box + "memory.high")), "max");
  EXPECT_EQ(trim(root.read(box + "memory.oom.group")), "1");
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  ASSERT_TRUE(j->owners.contains("guard:g1"));
  EXPECT_EQ(j->owners["guard:g1"]["pid"].get<pid_t>(), child);
  EXPECT_EQ(j->owners["guard:g1"]["origin"], "/srv.slice");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, "guard_start");
  EXPECT_EQ(events[0].data["cgroup_version"], 2);

  // The kernel kills inside the box: memory.events' oom_kill goes up.
  root.write(box + "memory.events", "low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 1\n");
  sup.tick();
  auto kill = std::find_if(events.begin(), events.end(), [](const Event& e) { return e.type == "oom_kill"; });
  ASSERT_NE(kill, events.end());
  EXPECT_EQ(kill->subject, "g1");
  EXPECT_EQ(kill->source, EventSource::guard);
  EXPECT_EQ(kill->data["oom_kills_total"], 1);
  auto line = nlohmann::json::parse(kill->to_line());
  EXPECT_EQ(line["type"], "oom_kill");
  // The one event shape (issue 12): source, subject, summary, data.
  EXPECT_EQ(line["source"], "guard");
  EXPECT_EQ(line["subject"], "g1");
  EXPECT_TRUE(line["time_ms"].is_number());
  EXPECT_EQ(line["data"]["oom_kills_total"], 1);
  EXPECT_NE(line["summary"].get<std::string>().find("g1"), std::string::npos);
  // Counted once.
  sup.tick();
  EXPECT_EQ(std::count_if(events.begin(), events.end(), [](const Event& e) { return e.type == "oom_kill"; }), 1);

  // A second guard on the same process is refused.
  auto again = sup.add(o);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(std::string(again.error().what()).find("already guarded"), std::string::npos);

  // End: processes back to where they came from, values restored, the cgroup gone, journal empty.
  ASSERT_TRUE(sup.end(*id).ok());
  EXPECT_EQ(trim(root.read("sys/fs/cgroup/srv.slice/cgroup.procs")), std::to_string(child));
  EXPECT_FALSE(fs::exists(root.root() / box));
  auto after = read_journal(root.paths());
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->empty());
}

// With memory.oom.group the kernel kills its chosen victim twice (once as the victim, once in the
// group kill) and memory.events counts both (Debian 13 guest, 6.12): one kill is one event; a new
// victim right after is still its own event.
TEST_F(GuardV2FakeTree, AGroupKillsSecondCountOfTheSameVictimIsOneEvent) {
  SupervisorConfig cfg;
  cfg.sample_interval = 0ms;
  GuardSupervisor sup(
      root.paths(), tuner, [&](const Event& e) { events.push_back(e); }, cfg);
  GuardOptions o;
  o.pid = child;
  o.budget = "1G";
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  std::string box = "sys/fs/cgroup/agent.slice/spark-guard-g1/";
  const pid_t other = 4190000;
  root.write("proc/" + std::to_string(other) + "/stat", std::to_string(other) + " (worker) S 1 1 1 0\n");
  root.write(box + "cgroup.procs", std::to_string(child) + "\n" + std::to_string(other) + "\n");
  auto kills = [&] {
    return std::count_if(events.begin(), events.end(), [](const Event& e) { return e.type == "oom_kill"; });
  };
  // The victim leaves the box; the first count is seen before the group kill's.
  root.write(box + "cgroup.procs", std::to_string(other) + "\n");
  root.write(box + "memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n");
  sup.tick();
  ASSERT_EQ(kills(), 1);
  auto first = std::find_if(events.begin(), events.end(), [](const Event& e) { return e.type == "oom_kill"; });
  EXPECT_EQ(first->data["pid"], child);
  // The group kill counts the same victim again: no second event.
  root.write(box + "memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 2\noom_group_kill 1\n");
  sup.tick();
  EXPECT_EQ(kills(), 1) << "the group kill's second count of one victim came as a second kill";
  // Another process killed: its own event.
  root.write(box + "cgroup.procs", "");
  root.write(box + "memory.events", "low 0\nhigh 0\nmax 2\noom 2\noom_kill 3\noom_group_kill 1\n");
  sup.tick();
  ASSERT_EQ(kills(), 2);
  EXPECT_EQ(events.back().type == "oom_kill" ? events.back().data["pid"] : nlohmann::json(), other);
  ASSERT_TRUE(sup.end(*id).ok());
}

TEST_F(GuardV2FakeTree, ResumesJournaledGuardsAfterARestart) {
  std::string id;
  {
    GuardSupervisor sup(root.paths(), tuner, nullptr);
    GuardOptions o;
    o.pid = child;
    o.budget = "512M";
    auto r = sup.add(o);
    ASSERT_TRUE(r.ok()) << r.error().what();
    id = *r;
  }  // the agent goes away (as with kill -9: nothing is undone)
  GuardSupervisor again(root.paths(), tuner, record());
  auto n = again.resume();
  ASSERT_TRUE(n.ok()) << n.error().what();
  EXPECT_EQ(*n, 1u);
  ASSERT_NE(again.state(id), nullptr);
  EXPECT_EQ(again.state(id)->pid, child);
  EXPECT_EQ(again.state(id)->limit, (100ull << 20) + (512ull << 20));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].type, "guard_resume");
  EXPECT_EQ(events[0].data["alive"], true);
  ASSERT_TRUE(again.end(id).ok());
  EXPECT_FALSE(fs::exists(root.root() / "sys/fs/cgroup/agent.slice/spark-guard-g1"));
}

// Issue 13: a guard's end that failed (here moving its process back out of the box) used to drop
// the guard at once: its box and limits stayed behind, nothing retried. It now stays, is retried
// with the backoff (100 ms doubling), never in a tight loop, and ends once the cause is gone.
TEST_F(GuardV2FakeTree, AFailedEndIsRetriedWithBackoffUntilItRestores) {
  auto h = find_memory_hierarchy(root.paths());
  ASSERT_TRUE(h.ok());
  test::FailingActuator failing(act, CgroupBox(root.paths(), *h, "/srv.slice").file_target("cgroup.procs"), EIO);
  failing.set_failing(false);
  Tuner t(root.paths(), failing);
  GuardSupervisor sup(
      root.paths(), t, [&](const Event& e) { events.push_back(e); }, SupervisorConfig{});
  GuardOptions o;
  o.pid = child;
  o.budget = "1G";
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  std::string box = "sys/fs/cgroup/agent.slice/spark-guard-g1";
  failing.set_failing(true);
  EXPECT_FALSE(sup.end(*id, "ended on request").ok());
  ASSERT_NE(sup.state(*id), nullptr) << "a guard whose end failed was dropped: its box and limits stay behind";
  EXPECT_TRUE(sup.ending(*id));
  EXPECT_TRUE(fs::exists(root.root() / box));
  using Clock = std::chrono::steady_clock;
  auto loop_until = [&](Clock::time_point end, auto done) {
    int loops = 0;
    while (Clock::now() < end && !done()) {
      std::this_thread::sleep_until(std::min(*sup.next_timer(), end));
      sup.tick();
      ++loops;
    }
    return loops;
  };
  int loops = loop_until(Clock::now() + 1600ms, [] { return false; });
  EXPECT_NE(sup.state(*id), nullptr) << "the guard went although every end failed";
  EXPECT_GE(failing.failures(), 3) << "a failed end was not retried";
  EXPECT_LE(failing.failures(), 7) << "retried too often for a doubling backoff";
  EXPECT_LE(loops, 12) << "a tight loop: " << loops << " turns";
  EXPECT_EQ(std::count_if(events.begin(), events.end(), [](const Event& e) { return e.type == "guard_error"; }), 1)
      << "the failure is said once, then logged at each retry";
  failing.set_failing(false);
  loop_until(Clock::now() + 5s, [&] { return sup.state(*id) == nullptr; });
  EXPECT_EQ(sup.state(*id), nullptr) << "not ended once the cause was gone";
  EXPECT_EQ(trim(root.read("sys/fs/cgroup/srv.slice/cgroup.procs")), std::to_string(child));
  EXPECT_FALSE(fs::exists(root.root() / box));
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  EXPECT_TRUE(j->empty());
  auto end = std::find_if(events.begin(), events.end(), [](const Event& e) { return e.type == "guard_end"; });
  ASSERT_NE(end, events.end());
  EXPECT_EQ(end->data["reason"], "ended on request");
}

TEST_F(GuardV2FakeTree, RefusesBadInputAndChangesNothing) {
  GuardSupervisor sup(root.paths(), tuner, nullptr);
  GuardOptions o;
  o.pid = child;
  o.budget = "64G";  // the fake host has 48 GiB
  auto r = sup.add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("above the host's RAM"), std::string::npos);
  o.budget = "1G";
  o.memory_max = 50ull << 20;  // below the 100 MiB it already uses
  r = sup.add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("--force"), std::string::npos);
  o.memory_max.reset();
  root.write("not-a-program", "data\n");  // mode 0644
  o.on_oom = {(root.root() / "not-a-program").string()};
  r = sup.add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("--on-oom"), std::string::npos);
  o.on_oom.clear();
  o.until_port = "nowhere";
  r = sup.add(o);
  ASSERT_FALSE(r.ok());
  o.until_port.clear();
  o.pid = 0;
  r = sup.add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(fs::exists(root.root() / "sys/fs/cgroup/agent.slice/spark-guard-g1"));
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  EXPECT_TRUE(j->empty());
}

// Under systemd the box is a transient scope, and systemd stops a scope once its processes are
// gone: after a memcg OOM with memory.oom.group (the Debian 13 guest) its cgroup was collected
// before the restart, and the restart tried to join a cgroup that no longer existed. Every restart
// asks for a new scope with the waiting server in it, and the limits and the journal follow.
TEST_F(GuardV2FakeTree, ARestartUnderSystemdAsksForANewScopeWithTheLimits) {
  fs::create_directories(root.root() / "run/systemd/system");
  root.write("sys/fs/cgroup/system.slice/cgroup.procs", "");
  MemoryHierarchy hier{CgroupVersion::v2, "", root.paths().cgroup};
  std::vector<ScopeRequest> asked;
  SupervisorConfig cfg = every_tick();
  cfg.start_scope = [&](const ScopeRequest& r) -> Result<std::string> {
    asked.push_back(r);  // what systemd does: the scope's cgroup, the pids moved into it
    CgroupBox scope(root.paths(), hier, "/system.slice/" + r.name);
    if (auto w = act.write(scope.dir_target(), std::string()); !w) return w.error();
    std::string procs;
    for (pid_t p : r.pids) {
      procs += std::to_string(p) + "\n";
      root.write("proc/" + std::to_string(p) + "/cgroup", "0::/system.slice/" + r.name + "\n");
    }
    root.write("sys/fs/cgroup/system.slice/" + r.name + "/cgroup.procs", procs);
    return std::string("/org/freedesktop/systemd1/job/") + std::to_string(asked.size());
  };
  GuardSupervisor sup(root.paths(), tuner, record(), cfg);
  GuardOptions o = guard_of_child("1G");
  o.restart = true;
  o.restart_backoff = 0ms;
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].name, "spark-guard-g1.scope");
  EXPECT_EQ(sup.state(*id)->box, "/system.slice/spark-guard-g1.scope");
  std::string limit = trim(root.read("sys/fs/cgroup/system.slice/spark-guard-g1.scope/memory.max"));
  EXPECT_EQ(limit, std::to_string((100ull << 20) + (1ull << 30)));

  // The OOM kills the whole box (memory.oom.group), and systemd collects the empty scope.
  root.write("sys/fs/cgroup/system.slice/spark-guard-g1.scope/memory.events",
             "low 0\nhigh 3\nmax 2\noom 1\noom_kill 1\noom_group_kill 1\n");
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  fs::remove_all(root.root() / "sys/fs/cgroup/system.slice/spark-guard-g1.scope");
  auto restarted = [&] {
    return std::find_if(events.begin(), events.end(), [](const Event& e) { return e.type == "server_restart"; });
  };
  auto t0 = std::chrono::steady_clock::now();
  while (restarted() == events.end() && std::chrono::steady_clock::now() - t0 < 20s) sup.run_once(20ms);
  ASSERT_NE(restarted(), events.end()) << "no restart; events: " << events.size();
  pid_t npid = restarted()->data["pid"].get<pid_t>();
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_EQ(asked[1].name, "spark-guard-g1-r1.scope");
  ASSERT_EQ(asked[1].pids.size(), 1u);
  EXPECT_EQ(asked[1].pids[0], npid);
  EXPECT_EQ(::kill(npid, 0), 0) << "the restarted server is not running";
  std::string nbox = "sys/fs/cgroup/system.slice/spark-guard-g1-r1.scope/";
  EXPECT_EQ(sup.state(*id)->box, "/system.slice/spark-guard-g1-r1.scope");
  EXPECT_EQ(trim(root.read(nbox + "memory.max")), limit);
  EXPECT_EQ(trim(root.read(nbox + "memory.oom.group")), "1");
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->owners["guard:g1"]["scope"], "spark-guard-g1-r1.scope");
  for (const auto& t : j->targets)
    EXPECT_EQ(t.target.name.find("spark-guard-g1.scope"), std::string::npos) << "the old scope is still journaled";

  // An OOM in the new scope is seen there.
  root.write(nbox + "memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n");
  size_t kills = std::count_if(events.begin(), events.end(), [](const Event& e) { return e.type == "oom_kill"; });
  sup.tick();
  EXPECT_GT(std::count_if(events.begin(), events.end(), [](const Event& e) { return e.type == "oom_kill"; }), kills);

  ASSERT_TRUE(sup.end(*id).ok());
  EXPECT_TRUE(read_journal(root.paths())->empty());
  ::kill(npid, SIGKILL);
  ::waitpid(npid, nullptr, 0);
}

TEST_F(GuardV2FakeTree, AHookThatHangsIsKilledAfterItsTimeout) {
  GuardSupervisor sup(root.paths(), tuner, record(), every_tick());
  auto sleep_bin = resolve_executable("sleep");
  ASSERT_TRUE(sleep_bin.ok());
  GuardOptions o = guard_of_child("1G");
  o.on_oom = {*sleep_bin, "30"};
  o.hook_timeout = 200ms;
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  root.write(box + "memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n");
  auto t0 = std::chrono::steady_clock::now();
  auto done = [&] {
    return std::find_if(events.begin(), events.end(), [](const Event& e) { return e.type == "hook_done"; });
  };
  while (done() == events.end() && std::chrono::steady_clock::now() - t0 < 5s) sup.run_once(20ms);
  ASSERT_NE(done(), events.end()) << "the hook was not reaped";
  EXPECT_EQ(done()->data["timed_out"], true);
  EXPECT_NE(done()->data["status"].get<std::string>().find("signal"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(std::count_if(events.begin(), events.end(), [](const Event& e) { return e.type == "hook_start"; }), 1);
  root.write(box + "cgroup.procs", "");
  ASSERT_TRUE(sup.end(*id).ok());
}

TEST_F(GuardV2FakeTree, SettlesAfterTheLoadIsDone) {
  GuardSupervisor sup(root.paths(), tuner, record(), every_tick());
  GuardOptions o = guard_of_child("1G");
  o.settle_after = 150ms;
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  EXPECT_EQ(trim(root.read(box + "memory.max")), "max") << "no budget limit during the load";
  // The load ends at 3 GiB: the budget is growth on top of that.
  root.write(box + "memory.current", std::to_string(3ull << 30) + "\n");
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < 1s &&
         std::none_of(events.begin(), events.end(), [](const Event& e) { return e.type == "guard_settled"; }))
    sup.run_once(20ms);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);
  EXPECT_EQ(trim(root.read(box + "memory.max")), std::to_string((3ull << 30) + (1ull << 30)));
  EXPECT_EQ(sup.state(*id)->footprint, 3ull << 30);
  auto j = read_journal(root.paths());
  EXPECT_TRUE(j->owners["guard:g1"]["settled"].get<bool>()) << "the settled limit is journaled";
  ASSERT_TRUE(sup.end(*id).ok());
}

TEST_F(GuardV2FakeTree, AProcessThatExitsDuringSetUpLeavesNothingBehind) {
  // A real process that exits right away (a zombie until reaped) while the fake /proc still shows it.
  pid_t brief = ::fork();
  if (brief == 0) ::_exit(0);
  std::this_thread::sleep_for(50ms);
  std::string p = "proc/" + std::to_string(brief) + "/";
  root.write(p + "stat", std::to_string(brief) + " (server) S 1 1 1 0\n");
  root.write(p + "cgroup", "0::/srv.slice\n");
  root.write(p + "statm", "1000 2560 0 0 0 0 0\n");
  GuardSupervisor sup(root.paths(), tuner, record());
  GuardOptions o;
  o.pid = brief;
  o.budget = "1G";
  auto r = sup.add(o);
  ::waitpid(brief, nullptr, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), ESRCH);
  EXPECT_NE(std::string(r.error().what()).find("exited during set-up"), std::string::npos) << r.error().what();
  EXPECT_FALSE(fs::exists(root.root() / "sys/fs/cgroup/agent.slice/spark-guard-g1"));
  EXPECT_TRUE(read_journal(root.paths())->empty());
  EXPECT_TRUE(events.empty());
}

// Issue 14 part 3: memory taken outside the guard's cgroup (only the host's MemAvailable falls, in
// the fixture meminfo): below --host-floor the guard warns naming the host and runs its hook.
TEST_F(GuardV2FakeTree, HostFloorWarnsAndRunsTheHookNamingTheHost) {
  GuardSupervisor sup(root.paths(), tuner, record(), every_tick());
  auto true_bin = resolve_executable("true");
  ASSERT_TRUE(true_bin.ok());
  GuardOptions o = guard_of_child("1G");
  o.on_oom = {*true_bin};
  o.host_floor = "4G";
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  EXPECT_EQ(sup.state(*id)->host_floor, 4ull << 30);
  auto count = [&](const std::string& type) {
    return std::count_if(events.begin(), events.end(), [&](const Event& e) { return e.type == type; });
  };
  for (int i = 0; i < 5; ++i) sup.run_once(10ms);
  EXPECT_EQ(count("host_floor"), 0) << "20 GiB available is above a 4 GiB floor";
  root.meminfo(48 * 1024 * 1024, 3 * 1024 * 1024);  // something outside the box took 17 GiB
  auto t0 = std::chrono::steady_clock::now();
  while (count("hook_done") == 0 && std::chrono::steady_clock::now() - t0 < 5s) sup.run_once(10ms);
  ASSERT_EQ(count("host_floor"), 1);
  auto floor_event = *std::find_if(events.begin(), events.end(), [](const Event& e) { return e.type == "host_floor"; });
  EXPECT_EQ(floor_event.data["cause"], "host");
  EXPECT_EQ(floor_event.data["host_floor"], 4ull << 30);
  EXPECT_EQ(floor_event.data["action"], "hook");  // no --restart: warning and hook only
  auto warn = std::find_if(events.begin(), events.end(), [](const Event& e) {
    return e.type == "memory_growth" && e.data.value("reason", "") == "host_floor";
  });
  ASSERT_NE(warn, events.end());
  auto hook = std::find_if(events.begin(), events.end(), [](const Event& e) { return e.type == "hook_start"; });
  ASSERT_NE(hook, events.end());
  EXPECT_EQ(hook->data["for"], "host_floor");
  EXPECT_EQ(count("hook_done"), 1);
  EXPECT_EQ(::kill(child, 0), 0) << "without --restart the server is left running";
  root.write(box + "cgroup.procs", "");
  ASSERT_TRUE(sup.end(*id).ok());
}

TEST_F(GuardV2FakeTree, KillAllUsesCgroupKill) {
  HostPaths p = root.paths();
  FakeCgroupfs fake(p);
  CgroupBox box(p, {CgroupVersion::v2, "", p.cgroup}, "/srv.slice");
  root.write("sys/fs/cgroup/srv.slice/cgroup.kill", "");
  ASSERT_TRUE(box.kill_all(fake).ok());
  EXPECT_EQ(trim(root.read("sys/fs/cgroup/srv.slice/cgroup.kill")), "1");
}

// Issue 11, defect 4: on v2 the box needs a parent that enables memory for its children, and a
// cgroup with processes cannot (no internal processes). An agent in a leaf below a delegated
// cgroup makes its boxes beside the leaf; where nothing enables memory it says what to do.
TEST_F(GuardV2FakeTree, OnV2TheBoxGoesUnderTheNearestCgroupThatEnablesMemory) {
  root.write("sys/fs/cgroup/agent.slice/leaf/cgroup.procs", "");
  root.write("sys/fs/cgroup/agent.slice/leaf/cgroup.subtree_control", "\n");
  root.write("proc/self/cgroup", "0::/agent.slice/leaf\n");
  MemoryHierarchy h{CgroupVersion::v2, "", root.paths().cgroup};
  EXPECT_EQ(*v2_box_parent(root.paths(), h, "/agent.slice/leaf"), "/agent.slice");
  EXPECT_EQ(*v2_box_parent(root.paths(), h, "/agent.slice"), "/agent.slice");
  GuardSupervisor sup(root.paths(), tuner, nullptr);
  GuardOptions o = guard_of_child("1G");
  auto id = sup.add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  EXPECT_EQ(sup.state(*id)->box, "/agent.slice/spark-guard-g1");
  EXPECT_EQ(trim(root.read(box + "cgroup.procs")), std::to_string(child));
  ASSERT_TRUE(sup.end(*id).ok());

  root.write("sys/fs/cgroup/agent.slice/cgroup.subtree_control", "pids\n");
  auto none = v2_box_parent(root.paths(), h, "/agent.slice/leaf");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.error().what()).find("cgroup.subtree_control"), std::string::npos);
  auto refused = sup.add(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(read_journal(root.paths())->empty());
  root.write("sys/fs/cgroup/cgroup.subtree_control", "cpu memory\n");  // the root delegates
  EXPECT_EQ(*v2_box_parent(root.paths(), h, "/agent.slice/leaf"), "/");
}

// Where systemd runs, the box is its transient scope: journaled as add() does it (owner state with
// `scope`, limits as cgroup layers, no dir layer: systemd owns the directory).
class GuardScopeFakeTree : public GuardV2FakeTree {
 protected:
  const std::string scope_dir = "sys/fs/cgroup/system.slice/spark-guard-g1.scope/";
  void journal_scope_guard() {
    for (const char* f : {"memory.high", "memory.max", "memory.oom.group"})
      root.write(scope_dir + f, std::string(f) == "memory.oom.group" ? "0\n" : "max\n");
    root.write(scope_dir + "cgroup.procs", std::to_string(child) + "\n");
    root.write(scope_dir + "memory.current", "104857600\n");
    GuardState st;
    st.id = "g1";
    st.pid = child;
    st.opt.pid = child;
    st.box = "/system.slice/spark-guard-g1.scope";
    st.scope = "spark-guard-g1.scope";
    st.owns_box = false;
    st.origin = "/srv.slice";
    st.settled = true;
    CgroupBox box(root.paths(), {CgroupVersion::v2, "", root.paths().cgroup}, st.box);
    ApplyOptions ao;
    ao.owner_state = st.to_json();
    auto r = tuner.apply(guard_owner("g1"), box.limit_changes({900ull << 20, 1ull << 30, true}, "guard g1 budget"), ao);
    ASSERT_TRUE(r.ok()) << r.error().what();
    ASSERT_EQ(trim(root.read(scope_dir + "memory.max")), std::to_string(1ull << 30));
  }
};

// Issue 11, defect 1: systemd deletes the scope when the guarded process exits. Ending the guard
// then found memory.high/max/oom.group missing, kept them in the journal, and revert failed forever.
TEST_F(GuardScopeFakeTree, AGuardWhoseScopeSystemdCollectedEndsAndLeavesNothingInTheJournal) {
  journal_scope_guard();
  fs::remove_all(root.root() / scope_dir);  // the process exited; systemd collected the scope
  auto r = end_guard(root.paths(), tuner, "g1");
  ASSERT_TRUE(r.ok()) << r.error().what();
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  EXPECT_TRUE(j->empty()) << to_json(*j).dump();
  auto list = list_guards(root.paths());
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  auto again = tuner.revert_all();
  EXPECT_TRUE(again.ok()) << again.error().what();
}

TEST_F(GuardScopeFakeTree, RevertAndResumeDropADeadScopeGuard) {
  journal_scope_guard();
  fs::remove_all(root.root() / scope_dir);
  {  // the agent's start: the guard's cgroup is gone, so it is released and dropped
    GuardSupervisor sup(root.paths(), tuner, record());
    auto n = sup.resume();
    ASSERT_TRUE(n.ok()) << n.error().what();
    EXPECT_EQ(*n, 0u);
  }
  EXPECT_TRUE(read_journal(root.paths())->empty());
  EXPECT_TRUE(list_guards(root.paths())->empty());

  journal_scope_guard();
  fs::remove_all(root.root() / scope_dir);
  auto r = tuner.revert_all();  // spark-tune revert
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_TRUE(read_journal(root.paths())->empty());
}

// Only a cgroup whose directory is gone counts as restored: a control file missing in a cgroup that
// still exists, and a missing sysctl, still fail and stay in the journal.
TEST_F(GuardScopeFakeTree, AMissingFileInALiveCgroupOrAMissingSysctlStillFails) {
  journal_scope_guard();
  fs::remove(root.root() / scope_dir / "memory.high");  // the directory is still there
  auto r = end_guard(root.paths(), tuner, "g1");
  ASSERT_FALSE(r.ok());
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  ASSERT_NE(j->find({TargetKind::cgroup, "system.slice/spark-guard-g1.scope/memory.high"}), nullptr);
  EXPECT_EQ(list_guards(root.paths())->size(), 1u);

  root.write("proc/sys/vm/vfs_cache_pressure", "100\n");
  ASSERT_TRUE(tuner.apply("profile", {{sysctl_target("vm.vfs_cache_pressure"), std::string("200"), "t"}}).ok());
  fs::remove(root.root() / "proc/sys/vm/vfs_cache_pressure");
  fs::remove_all(root.root() / "proc/sys/vm");  // not a cgroup: its parent being gone changes nothing
  auto p = tuner.release("profile");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(read_journal(root.paths())->find(sysctl_target("vm.vfs_cache_pressure")), nullptr);
}

// Issue 11, defect 2: ending a guard whose box is systemd's scope (Ctrl-C of guard --foreground
// goes through end) moves the process back to where it came from; systemd then collects the
// empty scope.
TEST_F(GuardScopeFakeTree, EndingAScopeGuardMovesTheProcessBackToItsOrigin) {
  journal_scope_guard();
  root.write("sys/fs/cgroup/srv.slice/cgroup.procs", "");
  auto r = end_guard(root.paths(), tuner, "g1");
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(trim(root.read("sys/fs/cgroup/srv.slice/cgroup.procs")), std::to_string(child));
  EXPECT_EQ(trim(root.read(scope_dir + "memory.max")), "max");
  EXPECT_TRUE(read_journal(root.paths())->empty());
}

TEST(GuardUnit, WritesAVerifiedDropinThroughTheJournalAndUndoesIt) {
  if (!resolve_executable("systemd-analyze").ok()) GTEST_SKIP() << "systemd-analyze not installed";
  test::FixtureRoot root;
  root.meminfo(48 * 1024 * 1024, 20 * 1024 * 1024);
  root.write("etc/systemd/system/llama.service", "[Unit]\nDescription=llama\n[Service]\nExecStart=/bin/sleep 1000\n");
  HostActuator act(root.paths());
  Tuner tuner(root.paths(), act);
  GuardOptions o;
  o.budget = "4G";
  o.restart = true;
  o.restart_max = 3;
  o.restart_window = 60s;
  auto r = write_unit_dropin(root.paths(), tuner, "llama", o);
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(r->unit, "llama.service");
  std::string text = root.read("etc/systemd/system/llama.service.d/50-spark-tune-guard.conf");
  EXPECT_NE(text.find("MemoryMax=" + std::to_string(4ull << 30) + "\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("MemoryHigh="), std::string::npos) << "MemoryHigh written though not asked for: " << text;
  EXPECT_NE(text.find("OOMPolicy=kill\n"), std::string::npos);
  EXPECT_NE(text.find("Restart=on-failure\n"), std::string::npos);
  EXPECT_NE(text.find("StartLimitBurst=3\n"), std::string::npos);
  auto j = read_journal(root.paths());
  ASSERT_TRUE(j.ok());
  EXPECT_TRUE(j->owners.contains("guard-unit:llama.service"));
  ASSERT_TRUE(undo_unit_dropin(root.paths(), tuner, "llama.service").ok());
  EXPECT_FALSE(fs::exists(root.root() / "etc/systemd/system/llama.service.d"));
  EXPECT_TRUE(read_journal(root.paths())->empty());
  EXPECT_FALSE(undo_unit_dropin(root.paths(), tuner, "llama.service").ok());
}

TEST(GuardUnit, RefusesMissingUnitsBadNamesAndWhatVerifyRejects) {
  if (!resolve_executable("systemd-analyze").ok()) GTEST_SKIP() << "systemd-analyze not installed";
  test::FixtureRoot root;
  root.meminfo(48 * 1024 * 1024, 20 * 1024 * 1024);
  HostActuator act(root.paths());
  Tuner tuner(root.paths(), act);
  GuardOptions o;
  auto missing = write_unit_dropin(root.paths(), tuner, "nope.service", o);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code().value(), ENOENT);
  EXPECT_FALSE(normalize_unit_name("a b").ok());
  EXPECT_FALSE(normalize_unit_name("x.socket").ok());
  root.write("etc/systemd/system/llama.service", "[Service]\nExecStart=/bin/sleep 1000\n");
  o.budget = "64G";  // above the fake host's 48 GiB
  EXPECT_FALSE(write_unit_dropin(root.paths(), tuner, "llama", o).ok());
  auto bad =
      verify_dropin(root.root() / "etc/systemd/system/llama.service", "llama.service", "[Service]\nMemoryMax=lots\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.error().what()).find("rejects"), std::string::npos);
  EXPECT_TRUE(verify_dropin(root.root() / "etc/systemd/system/llama.service", "llama.service",
                            "[Service]\nMemoryMax=1073741824\n")
                  .ok());
  EXPECT_FALSE(fs::exists(root.root() / "etc/systemd/system/llama.service.d"));
  EXPECT_TRUE(read_journal(root.paths())->empty());
}

}  // namespace
}  // namespace spark::guard
