// TelemetryHub with a scripted source: probe events go out at once, OOM kills are not reported
// twice (probe event + vmstat count), a PSI trigger closes the interval early, and the hub keeps
// totals, recent events, the latest JSON frame and the metrics text.
#include <gtest/gtest.h>

#include <deque>
#include <fstream>
#include <sstream>
#include <thread>

#include "telemetry/hub.h"

using spark::telemetry::DeepReport, spark::telemetry::DeepTrigger, spark::telemetry::DeepTriggerPolicy,
    spark::telemetry::DetectedEvent, spark::telemetry::MmEvent, spark::telemetry::StallThresholds,
    spark::telemetry::TelemetryHub, spark::telemetry::TelemetrySample, spark::telemetry::TelemetrySource,
    spark::telemetry::parse_buddyinfo, spark::telemetry::parse_policy_seconds, spark::telemetry::parse_vmstat;

namespace spark {
namespace {

using namespace std::chrono_literals;

class ScriptedSource : public TelemetrySource {
 public:
  std::deque<std::string> vmstats;  // one per sample(); the last one repeats
  std::deque<MmEvent> events;       // delivered by the next poll
  bool trigger = false;
  int samples = 0;

  Result<TelemetrySample> sample() override {
    TelemetrySample s;
    s.at = std::chrono::steady_clock::now();
    s.wall = std::chrono::system_clock::now();
    s.mem = *parse_meminfo("MemTotal: 1000000 kB\nMemAvailable: 900000 kB\nCached: 1000 kB\n");
    std::ifstream in(std::string(SPARK_TUNE_TEST_FIXTURES) + "/buddyinfo/vm-24g-1node.buddyinfo");
    std::stringstream ss;
    ss << in.rdbuf();
    s.buddy = *parse_buddyinfo(ss.str());
    s.vmstat = *parse_vmstat(vmstats.front());
    if (vmstats.size() > 1) vmstats.pop_front();
    ++samples;
    return s;
  }
  Result<int> poll_events(std::chrono::milliseconds, const std::function<void(const MmEvent&)>& on_event) override {
    int n = 0;
    while (!events.empty()) {
      on_event(events.front());
      events.pop_front();
      ++n;
    }
    return n;
  }
  bool take_pressure_trigger() override {
    bool t = trigger;
    trigger = false;
    return t;
  }
  bool has_probes() const override { return true; }
  std::string probe_status() const override { return "scripted"; }
  std::vector<std::string> probe_details() const override { return {}; }
  std::pair<size_t, size_t> probe_counts() const override { return {3, 4}; }
  Result<DeepReport> deep(std::chrono::milliseconds, size_t) override { return sys_error(ENOTSUP, "no deep"); }
  // Deep mode without blocking: scripted report, counts of starts and finishes.
  bool deep_fails = false;
  bool deep_on = false;
  int deep_starts = 0, deep_finishes = 0;
  Result<void> deep_start() override {
    if (deep_fails) return sys_error(ENOTSUP, "scripted failure");
    if (deep_on) return sys_error(EBUSY, "already attached");
    deep_on = true;
    ++deep_starts;
    return {};
  }
  Result<DeepReport> deep_finish(size_t top_n) override {
    if (!deep_on) return sys_error(EINVAL, "not running");
    deep_on = false;
    ++deep_finishes;
    DeepReport r;
    r.kind = "tp_btf";
    r.seconds = 0.05;
    r.orders[0] = 1000;
    r.orders[9] = 3;
    r.top = {{4242, "loader", 900, 2436}, {1, "init", 100, 100}};
    if (r.top.size() > top_n) r.top.resize(top_n);
    return r;
  }
  bool deep_attached() const override { return deep_on; }
};

MmEvent stall(uint32_t pid, uint64_t ms) {
  MmEvent e;
  e.raw.type = MM_EVENT_STALL;
  e.raw.pid = pid;
  e.raw.stall_kind = MM_HIST_DIRECT_RECLAIM;
  e.raw.duration_ns = ms * 1'000'000;
  e.raw.order = 9;
  e.comm = "loader";
  return e;
}

MmEvent oom(uint32_t pid) {
  MmEvent e;
  e.raw.type = MM_EVENT_OOM_VICTIM;
  e.raw.pid = pid;
  e.raw.flags = MM_EF_MEMCG_OOM;
  e.comm = "victim";
  e.memcg_path = "/box";
  e.oom_memcg_path = "/box";
  return e;
}

TEST(TelemetryHubUnit, OomOnceAtOnceThenTickWithoutDuplicate) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  s->vmstats = {"oom_kill 0\n", "oom_kill 1\n"};
  TelemetryHub hub(std::move(src), {}, 50ms);
  auto first = hub.step(0ms);  // baseline sample, nothing else
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->events.empty());
  EXPECT_EQ(s->samples, 1);
  s->events.push_back(oom(42));
  auto st = hub.step(1ms);  // before the tick: the OOM goes out at once, no sample
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->events.size(), 1u);
  EXPECT_EQ(st->events[0].type, "oom_kill");
  EXPECT_EQ(st->interval, nullptr);
  EXPECT_EQ(s->samples, 1);
  std::this_thread::sleep_for(60ms);
  st = hub.step(100ms);  // the tick: vmstat shows the same kill, not reported again
  ASSERT_TRUE(st.ok());
  ASSERT_NE(st->interval, nullptr);
  EXPECT_TRUE(st->events.empty());
  EXPECT_EQ(hub.totals().at("oom_kill"), 1u);
  ASSERT_EQ(hub.recent().size(), 1u);
  auto j = hub.latest_json();
  ASSERT_TRUE(j.is_object());
  ASSERT_EQ(j["events"].size(), 1u);             // the frame of the closed interval carries the OOM
  EXPECT_EQ(j["events"][0]["data"]["pid"], 42);  // the one event shape (issue 12)
  std::string m = hub.metrics();
  EXPECT_NE(m.find("spark_tune_detected_events_total{event=\"oom_kill\"} 1\n"), std::string::npos);
  EXPECT_NE(m.find("spark_tune_bpf_probes_attached 3\n"), std::string::npos);
}

TEST(TelemetryHubUnit, KillsTheProbesMissedComeFromVmstat) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  s->vmstats = {"oom_kill 0\n", "oom_kill 2\n"};
  TelemetryHub hub(std::move(src), {}, 10ms);
  ASSERT_TRUE(hub.step(0ms).ok());
  s->events.push_back(oom(7));
  std::this_thread::sleep_for(20ms);
  auto st = hub.step(50ms);
  ASSERT_TRUE(st.ok());
  ASSERT_NE(st->interval, nullptr);
  ASSERT_EQ(st->events.size(), 2u);  // the probe's event, then vmstat's "2 kills" (one unseen)
  EXPECT_EQ(st->events[0].data["pid"], 7);
  EXPECT_EQ(st->events[1].data["vmstat_oom_kill"], 2);
  EXPECT_EQ(st->events[1].data["seen_by_probes"], 1);
}

TEST(TelemetryHubUnit, PressureTriggerClosesTheIntervalEarly) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  s->vmstats = {"allocstall_normal 0\n", "allocstall_normal 5\n"};
  TelemetryHub hub(std::move(src), {}, 3600s);
  ASSERT_TRUE(hub.step(0ms).ok());
  auto st = hub.step(1ms);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->interval, nullptr);  // an hour to the tick
  s->trigger = true;
  st = hub.step(1ms);
  ASSERT_TRUE(st.ok());
  ASSERT_NE(st->interval, nullptr);
  EXPECT_TRUE(st->interval->psi_triggered);
  ASSERT_EQ(st->events.size(), 1u);
  EXPECT_EQ(st->events[0].type, "reclaim_storm");
}

}  // namespace
}  // namespace spark

namespace spark {
namespace {

TEST(TelemetryHubUnit, ProbeEventBeforeVmstatCountsIsNotReportedTwice) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  // The probe delivers the kill in the first interval; vmstat counts it only in the second.
  s->vmstats = {"oom_kill 0\n", "oom_kill 0\n", "oom_kill 1\n"};
  TelemetryHub hub(std::move(src), {}, 10ms);
  ASSERT_TRUE(hub.step(0ms).ok());
  s->events.push_back(oom(9));
  size_t total = 0;
  for (int i = 0; i < 2; ++i) {
    std::this_thread::sleep_for(15ms);
    auto st = hub.step(50ms);
    ASSERT_TRUE(st.ok());
    total += st->events.size();
  }
  EXPECT_EQ(total, 1u);
  EXPECT_EQ(hub.totals().at("oom_kill"), 1u);
}

TEST(DeepTriggerUnit, StartsOnStallKindsOnlyOnceThenCoolsDownFromTheEnd) {
  using C = DeepTrigger::Clock;
  DeepTriggerPolicy p;
  p.period = 10s;
  p.cooldown = 60s;
  DeepTrigger t(p);
  C::time_point t0{};
  t0 += 1000s;
  EXPECT_FALSE(t.should_start("oom_kill", t0));
  EXPECT_FALSE(t.should_start("pagecache_flood", t0));
  EXPECT_TRUE(t.should_start("fragmentation_stall", t0));
  EXPECT_TRUE(t.should_start("reclaim_storm", t0));
  t.started(t0);
  ASSERT_TRUE(t.due());
  EXPECT_EQ(*t.due(), t0 + 10s);
  EXPECT_FALSE(t.should_start("fragmentation_stall", t0 + 1s));  // running: no second period, no extension
  EXPECT_EQ(*t.due(), t0 + 10s);
  t.finished(t0 + 10s);
  EXPECT_FALSE(t.running());
  EXPECT_FALSE(t.should_start("fragmentation_stall", t0 + 69s));  // cooldown counts from the end
  EXPECT_TRUE(t.should_start("fragmentation_stall", t0 + 70s));
  // A failed attach also cools down (no retry on every event).
  t.failed(t0 + 70s);
  EXPECT_FALSE(t.should_start("reclaim_storm", t0 + 129s));
  EXPECT_TRUE(t.should_start("reclaim_storm", t0 + 130s));
  // Period 0: never.
  DeepTrigger off(DeepTriggerPolicy{0ms});
  EXPECT_FALSE(off.should_start("fragmentation_stall", t0));
}

TEST(DeepTriggerUnit, PolicySecondsParse) {
  std::string why;
  EXPECT_EQ(parse_policy_seconds("10", &why), std::chrono::milliseconds(10000));
  EXPECT_EQ(parse_policy_seconds("2.5", &why), std::chrono::milliseconds(2500));
  EXPECT_EQ(parse_policy_seconds("0", &why), std::chrono::milliseconds(0));
  EXPECT_FALSE(parse_policy_seconds("-1", &why));
  EXPECT_FALSE(parse_policy_seconds("10s", &why));
  EXPECT_NE(why.find("'10s'"), std::string::npos);
  EXPECT_FALSE(parse_policy_seconds("lots", &why));
}

TEST(TelemetryHubUnit, StallAttachesDeepModeReportsItAndCoolsDown) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  s->vmstats = {"oom_kill 0\n"};
  StallThresholds th;
  th.cooldown = 0s;  // every stall is an event: only the deep trigger's own cooldown holds it back
  TelemetryHub hub(std::move(src), th, 3600s);
  DeepTriggerPolicy p;
  p.period = 50ms;
  p.cooldown = 3600s;
  p.top_n = 1;
  hub.set_deep_trigger(p);
  ASSERT_TRUE(hub.step(0ms).ok());
  s->events.push_back(oom(9));  // not a triggering kind
  auto a = hub.step(0ms);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(s->deep_starts, 0);
  s->events.push_back(stall(4242, 200));
  auto b = hub.step(0ms);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->events.size(), 1u);
  EXPECT_EQ(b->events[0].type, "fragmentation_stall");
  uint64_t stall_seq = b->events[0].seq;
  EXPECT_EQ(stall_seq, 2u);  // numbered by the hub: the OOM was 1
  EXPECT_EQ(s->deep_starts, 1);
  EXPECT_TRUE(s->deep_on);
  // The hub's next deadline is the end of the period, not the (hour-long) tick.
  EXPECT_LE(hub.next_tick(), std::chrono::steady_clock::now() + 50ms);
  // Another stall while attached: an event, but no second start.
  s->events.push_back(stall(4242, 300));
  auto again = hub.step(0ms);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->events.size(), 1u);
  EXPECT_EQ(s->deep_starts, 1);
  std::this_thread::sleep_for(60ms);
  auto c = hub.step(0ms);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->events.size(), 1u);
  const DetectedEvent& r = c->events[0];
  EXPECT_EQ(r.type, "deep_report");
  EXPECT_EQ(r.data["trigger"]["seq"], stall_seq);
  EXPECT_EQ(r.data["trigger"]["event"], "fragmentation_stall");
  EXPECT_EQ(r.data["allocs_by_order"][9], 3);
  ASSERT_EQ(r.data["top_tasks"].size(), 1u);  // top_n
  EXPECT_EQ(r.data["top_tasks"][0]["comm"], "loader");
  EXPECT_NE(r.summary.find("after fragmentation_stall #2"), std::string::npos) << r.summary;
  EXPECT_NE(r.summary.find("loader(4242)"), std::string::npos) << r.summary;
  EXPECT_EQ(s->deep_finishes, 1);
  EXPECT_FALSE(s->deep_on);  // detached after the period
  ASSERT_TRUE(hub.last_deep_report());
  std::string m = hub.metrics();
  EXPECT_NE(m.find("spark_tune_deep_mode_attached 0\n"), std::string::npos);
  EXPECT_NE(m.find("spark_tune_detected_events_total{event=\"deep_report\"} 1\n"), std::string::npos);
  EXPECT_NE(m.find("spark_tune_deep_last_allocations{order=\"9\"} 3\n"), std::string::npos);
  // Cooldown: a later stall is reported but does not attach it again.
  s->events.push_back(stall(4242, 400));
  auto later = hub.step(0ms);
  ASSERT_TRUE(later.ok());
  ASSERT_EQ(later->events.size(), 1u);
  EXPECT_EQ(later->events[0].type, "fragmentation_stall");
  EXPECT_EQ(s->deep_starts, 1);
}

TEST(TelemetryHubUnit, DeepModeThatCannotAttachIsNotRetriedPerEvent) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  s->vmstats = {"oom_kill 0\n"};
  s->deep_fails = true;
  TelemetryHub hub(std::move(src), {}, 3600s);
  DeepTriggerPolicy p;
  p.period = 50ms;
  p.cooldown = 3600s;
  hub.set_deep_trigger(p);
  ASSERT_TRUE(hub.step(0ms).ok());
  s->events.push_back(stall(1, 200));
  auto b = hub.step(0ms);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->events.size(), 1u);  // the stall itself still goes out
  EXPECT_FALSE(hub.deep_trigger().running());
  s->deep_fails = false;
  s->events.push_back(stall(1, 200));
  (void)hub.step(0ms);
  EXPECT_EQ(s->deep_starts, 0);
}

TEST(TelemetryHubUnit, NoDeepTriggerUnlessSet) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  s->vmstats = {"oom_kill 0\n"};
  TelemetryHub hub(std::move(src), {}, 3600s);
  ASSERT_TRUE(hub.step(0ms).ok());
  s->events.push_back(stall(1, 200));
  (void)hub.step(0ms);
  EXPECT_EQ(s->deep_starts, 0);
}

// Issue 12, defect 1: a request while a period runs joins it (it was refused with EBUSY until
// that period reported); the period ends early when everyone who asked has gone, unless the
// detector started it.
TEST(TelemetryHubUnit, AskedDeepJoinsTheRunningPeriod) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  s->vmstats = {"oom_kill 0\n"};
  TelemetryHub hub(std::move(src), {}, 3600s);
  ASSERT_TRUE(hub.step(0ms).ok());
  auto first = hub.start_deep(30s, "first");
  ASSERT_TRUE(first.ok()) << describe(first.error());
  EXPECT_FALSE(first->joined);
  auto second = hub.start_deep(5s, "second");
  ASSERT_TRUE(second.ok()) << "a second request was refused: " << describe(second.error());
  EXPECT_TRUE(second->joined);
  EXPECT_FALSE(second->by_detector);
  EXPECT_EQ(second->until, first->until) << "joining must not move the period's end";
  EXPECT_EQ(s->deep_starts, 1);
}

TEST(TelemetryHubUnit, AskedDeepEndsEarlyWhenAskersHaveGone) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  s->vmstats = {"oom_kill 0\n"};
  TelemetryHub hub(std::move(src), {}, 3600s);
  ASSERT_TRUE(hub.step(0ms).ok());
  ASSERT_TRUE(hub.start_deep(30s, "monitor").ok());
  EXPECT_TRUE(hub.end_asked_deep());
  auto st = hub.step(0ms);
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->events.size(), 1u);
  EXPECT_EQ(st->events[0].type, "deep_report");
  EXPECT_FALSE(s->deep_on) << "deep mode stayed attached";
  EXPECT_FALSE(hub.deep_trigger().running());
  EXPECT_EQ(hub.deep_reports(), 1u);
  EXPECT_FALSE(hub.end_asked_deep()) << "nothing runs: nothing to end";
  // A new period starts at once.
  auto again = hub.start_deep(1s, "monitor");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->joined);
}

TEST(TelemetryHubUnit, DetectorDeepRunsItsLengthWhateverJoinsAndLeaves) {
  auto src = std::make_unique<ScriptedSource>();
  ScriptedSource* s = src.get();
  StallThresholds th;
  th.cooldown = 0s;
  s->vmstats = {"oom_kill 0\n"};
  TelemetryHub hub(std::move(src), th, 3600s);
  DeepTriggerPolicy p;
  p.period = 60s;
  hub.set_deep_trigger(p);
  ASSERT_TRUE(hub.step(0ms).ok());
  s->events.push_back(stall(4242, 200));
  ASSERT_TRUE(hub.step(0ms).ok());
  ASSERT_TRUE(hub.deep_trigger().running()) << "the stall did not start the detector's period";
  auto joined = hub.start_deep(1s, "monitor");
  ASSERT_TRUE(joined.ok());
  EXPECT_TRUE(joined->joined);
  EXPECT_TRUE(joined->by_detector);
  EXPECT_FALSE(hub.end_asked_deep());
  EXPECT_TRUE(hub.deep_trigger().running());
  EXPECT_TRUE(s->deep_on);
}

}  // namespace
}  // namespace spark
