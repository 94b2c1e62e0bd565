// TelemetryHub with a scripted source: probe events go out at once, OOM kills are not reported
// twice (probe event + vmstat count), a PSI trigger closes the interval early, and the hub keeps
// totals, recent events, the latest JSON frame and the metrics text.
#include <gtest/gtest.h>

#include <deque>
#include <fstream>
#include <sstream>
#include <thread>

#include "telemetry/hub.h"

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
};

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
  EXPECT_EQ(st->events[0].kind, "oom_kill");
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
  ASSERT_EQ(j["events"].size(), 1u);  // the frame of the closed interval carries the OOM
  EXPECT_EQ(j["events"][0]["evidence"]["pid"], 42);
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
  EXPECT_EQ(st->events[0].evidence["pid"], 7);
  EXPECT_EQ(st->events[1].evidence["vmstat_oom_kill"], 2);
  EXPECT_EQ(st->events[1].evidence["seen_by_probes"], 1);
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
  EXPECT_EQ(st->events[0].kind, "reclaim_storm");
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

}  // namespace
}  // namespace spark
