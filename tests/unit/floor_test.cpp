// Issue 14 part 2: the floor's parsing, its ladder (policy alone, on a clock the test drives) and its
// keeper on a fixture tree (meminfo injected, the kernel triggers written into the fixture).
#include "window/floor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include "state/journal.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "tune/actuator.h"
#include "tune/tuner.h"
#include "window/window.h"

using spark::state::read_journal;

using spark::tune::ApplyOptions, spark::tune::HostActuator, spark::tune::Tuner;

using spark::window::FloorAsk, spark::window::FloorKeeper, spark::window::FloorLadder, spark::window::FloorReading,
    spark::window::FloorSpec, spark::window::FloorStep, spark::window::WindowManager, spark::window::WindowRecord,
    spark::window::k_floor_period, spark::window::parse_floor, spark::window::record_to_json,
    spark::window::resolve_floor, spark::window::window_floor;

namespace spark {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr uint64_t k_gib = 1ull << 30;
constexpr uint64_t k_mib = 1ull << 20;

MemInfo host(uint64_t free, uint64_t available) { return MemInfo::of(24 * k_gib, available, free); }

TEST(FloorParse, SizesSharesAndBadInput) {
  EXPECT_EQ(*parse_floor("8G", 24 * k_gib, "--free-floor"), 8 * k_gib);
  EXPECT_EQ(*parse_floor("25%", 24 * k_gib, "--free-floor"), 6 * k_gib);
  EXPECT_EQ(*parse_floor("5% of ram", 100 * k_gib, "--free-floor"), 5 * k_gib);
  EXPECT_EQ(*parse_floor("off", 24 * k_gib, "--free-floor"), 0u);
  for (const char* bad : {"-1G", "-5%", "lots", "0%", "100%", "150%", "24G", "30G", "5% of available"}) {
    auto r = parse_floor(bad, 24 * k_gib, "--free-floor");
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(std::string(r.error().what()).find("--free-floor"), std::string::npos) << r.error().what();
  }
}

TEST(FloorParse, AlreadyCrossedIsRefusedUnlessForced) {
  FloorAsk a;
  a.free = "2G";
  auto r = resolve_floor(a, host(1 * k_gib, 10 * k_gib));
  ASSERT_FALSE(r);
  EXPECT_NE(std::string(r.error().what()).find("--force"), std::string::npos);
  a.force = true;
  auto f = resolve_floor(a, host(1 * k_gib, 10 * k_gib));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->free_bytes, 2 * k_gib);
  EXPECT_GE(f->hysteresis, 64 * k_mib);
  FloorAsk cmd_only;
  cmd_only.on_floor = {"true"};
  EXPECT_FALSE(resolve_floor(cmd_only, host(4 * k_gib, 10 * k_gib)));
}

TEST(FloorParse, ProfileFloorHoldsOnUnifiedHostsOnly) {
  std::map<std::string, std::string> prof{{"window.free_floor", "3%"}, {"window.available_floor", "5%"}};
  auto mem = host(8 * k_gib, 16 * k_gib);
  int asked_nvml = 0;
  auto unified = [&] {
    ++asked_nvml;
    return true;
  };
  auto discrete = [&] {
    ++asked_nvml;
    return false;
  };
  auto on = window_floor(std::nullopt, prof, unified, mem);
  ASSERT_TRUE(on);
  ASSERT_TRUE(*on);
  EXPECT_EQ((*on)->free_bytes, static_cast<uint64_t>(24 * k_gib * 0.03));
  EXPECT_EQ((*on)->available_bytes, static_cast<uint64_t>(24 * k_gib * 0.05));
  auto off = window_floor(std::nullopt, prof, discrete, mem);
  ASSERT_TRUE(off);
  EXPECT_FALSE(*off);
  prof["window.floor"] = "on";
  auto forced_on = window_floor(std::nullopt, prof, discrete, mem);
  ASSERT_TRUE(forced_on && *forced_on);
  prof["window.floor"] = "off";
  EXPECT_FALSE(*window_floor(std::nullopt, prof, unified, mem));
  // Asked floors are what holds; NVML is not asked then.
  prof.erase("window.floor");
  asked_nvml = 0;
  FloorAsk a;
  a.available = "1G";
  auto asked = window_floor(a, prof, unified, mem);
  ASSERT_TRUE(asked && *asked);
  EXPECT_EQ((*asked)->free_bytes, 0u);
  EXPECT_EQ((*asked)->available_bytes, k_gib);
  EXPECT_EQ(asked_nvml, 0);
  prof["window.floor"] = "sometimes";
  EXPECT_FALSE(window_floor(std::nullopt, prof, unified, mem));
}

FloorSpec spec_1g() {
  FloorSpec s;
  s.free_bytes = k_gib;
  s.hysteresis = 256 * k_mib;
  s.grace = 100ms;
  s.max_pause = 1000ms;
  s.kill_grace = 500ms;
  return s;
}

TEST(FloorLadder, ClimbsOneStepPerGraceAndReArms) {
  FloorLadder l(spec_1g(), true);
  auto t = Clock::now();
  FloorReading above{2 * k_gib, 4 * k_gib}, below{512 * k_mib, 4 * k_gib};
  EXPECT_FALSE(l.observe(above, t).act);
  auto d = l.observe(below, t += 10ms);
  EXPECT_TRUE(d.crossed);
  ASSERT_TRUE(d.act);
  EXPECT_EQ(*d.act, FloorStep::evict);
  // Within the grace: nothing more.
  d = l.observe(below, t += 50ms);
  EXPECT_FALSE(d.act);
  EXPECT_FALSE(d.crossed);
  d = l.observe(below, t += 60ms);
  ASSERT_TRUE(d.act);
  EXPECT_EQ(*d.act, FloorStep::drop_caches);
  // Step 2 restored the floor: no step 3, and the ladder re-arms.
  d = l.observe(above, t += 10ms);
  EXPECT_TRUE(d.restored);
  EXPECT_FALSE(d.act);
  d = l.observe(below, t += 10ms);
  EXPECT_TRUE(d.crossed);
  EXPECT_EQ(*d.act, FloorStep::evict);
}

TEST(FloorLadder, PausesUntilFloorPlusHysteresis) {
  FloorLadder l(spec_1g(), true);
  auto t = Clock::now();
  FloorReading below{512 * k_mib, 4 * k_gib};
  std::vector<FloorStep> steps;
  for (int i = 0; i < 40 && !l.paused(); ++i)
    if (auto d = l.observe(below, t += 50ms); d.act) steps.push_back(*d.act);
  ASSERT_EQ(steps,
            (std::vector<FloorStep>{FloorStep::evict, FloorStep::drop_caches, FloorStep::compact, FloorStep::pause}));
  // Above the floor but within the hysteresis: still paused.
  auto d = l.observe({k_gib + 100 * k_mib, 4 * k_gib}, t += 10ms);
  EXPECT_FALSE(d.resume);
  EXPECT_TRUE(l.paused());
  d = l.observe({k_gib + 300 * k_mib, 4 * k_gib}, t += 10ms);
  EXPECT_TRUE(d.resume);
  EXPECT_TRUE(d.restored);
  EXPECT_FALSE(l.paused());
}

TEST(FloorLadder, BoundedPauseThenStopThenKill) {
  FloorLadder l(spec_1g(), true);
  auto t = Clock::now();
  FloorReading below{512 * k_mib, 4 * k_gib};
  for (int i = 0; i < 40 && !l.paused(); ++i) (void)l.observe(below, t += 50ms);
  ASSERT_TRUE(l.paused());
  auto d = l.observe(below, t += 900ms);
  EXPECT_FALSE(d.act);
  d = l.observe(below, t += 150ms);
  ASSERT_TRUE(d.act);
  EXPECT_EQ(*d.act, FloorStep::stop);
  EXPECT_FALSE(l.observe(below, t += 100ms).kill);
  EXPECT_TRUE(l.observe(below, t += 450ms).kill);
  // Done: nothing more, whatever memory does.
  auto last = l.observe(below, t += 1s);
  EXPECT_FALSE(last.act || last.kill || last.crossed);
}

TEST(FloorLadder, WithoutAProcessStopsAtCompaction) {
  FloorLadder l(spec_1g(), false);
  auto t = Clock::now();
  FloorReading below{512 * k_mib, 4 * k_gib};
  std::vector<FloorStep> steps;
  int exhausted = 0;
  for (int i = 0; i < 20; ++i) {
    auto d = l.observe(below, t += 50ms);
    if (d.act) steps.push_back(*d.act);
    exhausted += d.exhausted;
  }
  EXPECT_EQ(steps, (std::vector<FloorStep>{FloorStep::evict, FloorStep::drop_caches, FloorStep::compact}));
  EXPECT_EQ(exhausted, 1);
  EXPECT_TRUE(l.observe({2 * k_gib, 4 * k_gib}, t += 10ms).restored);
}

TEST(FloorLadder, AvailableFloorAlone) {
  FloorSpec s;
  s.available_bytes = 2 * k_gib;
  FloorLadder l(s, false);
  auto t = Clock::now();
  EXPECT_FALSE(l.observe({10 * k_mib, 3 * k_gib}, t).crossed);  // free is no floor here
  EXPECT_TRUE(l.observe({10 * k_mib, k_gib}, t += 10ms).crossed);
}

// The keeper on a fixture tree: meminfo from the test, triggers land in the tree's proc/sys.
TEST(FloorKeeper, StepsAreEventsWithFiguresAndKernelWritesGoThroughTheActuator) {
  test::FixtureRoot root;
  root.meminfo(24 * k_gib / 1024, 16 * k_gib / 1024);
  root.write("proc/sys/vm/drop_caches", "0\n");
  root.write("proc/sys/vm/compact_memory", "0\n");
  root.write("model/a.bin", std::string(4096, 'x'));
  HostActuator act(root.paths());
  Tuner tuner(root.paths(), act);
  std::vector<Event> events;
  FloorSpec s = spec_1g();
  s.grace = 0ms;
  FloorKeeper k(root.paths(), tuner, "w9", {root.root() / "model/a.bin"}, 0, s,
                [&](const Event& e) { events.push_back(e); });
  uint64_t free = 2 * k_gib;
  k.set_meminfo_source([&]() -> Result<MemInfo> { return host(free, 8 * k_gib); });
  auto t = Clock::now();
  k.tick(t);
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(k.next_check(), t + k_floor_period);
  free = 300 * k_mib;
  for (int i = 0; i < 6; ++i) k.tick(t += 10ms);
  free = 3 * k_gib;
  k.tick(t += 10ms);
  // drop_caches and compact run on a thread of their own: finish() waits for them and reports them.
  auto summary = k.finish();
  std::vector<std::string> seen;
  for (const auto& e : events) {
    EXPECT_EQ(e.source, EventSource::window);
    EXPECT_EQ(e.subject, "w9");
    EXPECT_TRUE(known_event_type(e.source, e.type)) << e.type;
    seen.push_back(e.type + (e.data.contains("action") ? ":" + e.data["action"].get<std::string>() : ""));
  }
  ASSERT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen[0], "floor_crossed");
  EXPECT_EQ(seen[1], "floor_action:evict");
  std::multiset<std::string> rest(seen.begin() + 2, seen.end());
  EXPECT_EQ(rest, (std::multiset<std::string>{"floor_action:drop_caches", "floor_action:compact",
                                              "floor_action:exhausted", "floor_restored"}));
  const auto& evict = events[1].data;
  EXPECT_EQ(evict["step"], 1);
  EXPECT_EQ(evict["before"]["free"], 300 * k_mib);
  EXPECT_TRUE(evict.contains("after"));
  EXPECT_TRUE(evict.contains("since_crossing_us"));
  EXPECT_NE(evict["detail"].get<std::string>().find("1 of 1 files evicted"), std::string::npos);
  EXPECT_EQ(trim(root.read("proc/sys/vm/drop_caches")), "1");  // clean cache only, never 3
  EXPECT_EQ(trim(root.read("proc/sys/vm/compact_memory")), "1");
  EXPECT_EQ(summary["crossings"], 1);
  EXPECT_EQ(summary["actions"]["evict"], 1);
  EXPECT_EQ(summary["actions"]["compact"], 1);
  EXPECT_EQ(summary["lowest_free"], 300 * k_mib);
  EXPECT_EQ(summary["first_action_us"].size(), 1u);
}

TEST(FloorCli, BadFloorsExitTwoBeforeAnythingChanges) {
  test::FixtureRoot root;
  root.meminfo(24 * k_gib / 1024, 16 * k_gib / 1024);
  for (auto args : std::vector<std::vector<std::string>>{{"window", "begin", "--free-floor=-1G"},
                                                         {"window", "begin", "--available-floor=lots"},
                                                         {"window", "begin", "--free-floor=120%"},
                                                         {"window", "begin", "--on-floor= "},
                                                         {"run", "--free-floor=-5%", "--", "true"}}) {
    args.insert(args.begin(), "--root=" + root.root().string());
    auto r = test::run_spark_tune(args);
    EXPECT_EQ(r.exit_code, 2) << args[2] << " " << args[3] << ": " << r.err;
    EXPECT_NE(r.err.find("floor"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(root.paths().journal_file()));
}

}  // namespace
}  // namespace spark

namespace spark {
namespace {

// A tree the floor stopped with SIGSTOP is in the journal before the signal, so an agent that died
// meanwhile continues it at its next start: a paused process is never left paused.
TEST(FloorRecovery, StoppedProcessesInTheJournalAreContinuedByTheNextAgent) {
  test::FixtureRoot root;
  root.meminfo(24 * k_gib / 1024, 16 * k_gib / 1024);
  HostActuator act(root.paths());
  Tuner tuner(root.paths(), act);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (;;) ::pause();
  }
  ASSERT_EQ(::kill(child, SIGSTOP), 0);
  int st = 0;
  ASSERT_EQ(::waitpid(child, &st, WUNTRACED), child);
  ASSERT_TRUE(WIFSTOPPED(st));
  // The fixture's /proc names the child with the start time the journal holds.
  std::string stat = std::to_string(child) + " (loader) T 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242";
  for (int i = 0; i < 30; ++i) stat += " 0";
  root.write("proc/" + std::to_string(child) + "/stat", stat + "\n");
  WindowRecord r;
  r.id = "w5";
  r.deadline_ms = 1;  // long past: the window ends at recovery
  r.begun_ms = 0;
  nlohmann::json state = record_to_json(r);
  nlohmann::json stopped;
  stopped["pid"] = child;
  stopped["start"] = 4242;
  state["floor_stopped"] = nlohmann::json::array();
  state["floor_stopped"].push_back(stopped);
  ApplyOptions ao;
  ao.owner_state = state;
  ASSERT_TRUE(tuner.apply("window:w5", {}, ao).ok());
  auto jd = read_journal(root.paths());
  ASSERT_TRUE(jd.ok());
  ASSERT_TRUE(jd->owners.contains("window:w5"));
  ASSERT_TRUE(jd->owners["window:w5"].contains("floor_stopped")) << jd->owners.dump();
  WindowManager m(root.paths(), tuner);
  auto ended = m.recover();
  ASSERT_TRUE(ended.ok()) << ended.error().what();
  ASSERT_EQ(::waitpid(child, &st, WCONTINUED | WNOHANG), child) << "the stopped process was not continued";
  EXPECT_TRUE(WIFCONTINUED(st)) << "the stopped process was not continued";
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

}  // namespace
}  // namespace spark
