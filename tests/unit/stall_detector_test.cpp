#include "telemetry/stall_detector.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>

using spark::telemetry::MmEvent, spark::telemetry::StallDetector, spark::telemetry::StallThresholds,
    spark::telemetry::TelemetrySample, spark::telemetry::interval_between, spark::telemetry::parse_buddyinfo,
    spark::telemetry::parse_psi, spark::telemetry::parse_vmstat;

namespace spark {
namespace {

using namespace std::chrono_literals;

std::string fixture_text(const std::string& name) {
  std::ifstream in(std::string(SPARK_TUNE_TEST_FIXTURES) + "/buddyinfo/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TelemetrySample make_sample(std::chrono::seconds t, uint64_t total_kb, uint64_t avail_kb, uint64_t cached_kb,
                            const std::string& buddy_fixture, const std::string& vmstat, double psi_avg10 = 0) {
  TelemetrySample s;
  auto base = std::chrono::steady_clock::time_point{} + 1000s;
  s.at = base + t;
  s.wall = std::chrono::system_clock::time_point{} + 1000000s + t;
  s.mem = *parse_meminfo("MemTotal: " + std::to_string(total_kb) + " kB\nMemAvailable: " + std::to_string(avail_kb) +
                         " kB\nCached: " + std::to_string(cached_kb) + " kB\nDirty: 0 kB\n");
  s.buddy = *parse_buddyinfo(fixture_text(buddy_fixture));
  s.vmstat = *parse_vmstat(vmstat);
  char psi[128];
  std::snprintf(psi, sizeof psi, "some avg10=%.2f avg60=0.00 avg300=0.00 total=0\n", psi_avg10);
  s.psi = *parse_psi(psi);
  return s;
}

const std::string k_quiet = "allocstall_normal 0\npgscan_direct 0\noom_kill 0\n";

TEST(StallDetector, QuietHostNoEvents) {
  auto a = make_sample(0s, 24 << 20, 20 << 20, 1 << 20, "vm-24g-1node.buddyinfo", k_quiet);
  auto b = make_sample(1s, 24 << 20, 20 << 20, 1 << 20, "vm-24g-1node.buddyinfo", k_quiet);
  StallDetector d;
  EXPECT_TRUE(d.feed(interval_between(a, b), {}).empty());
}

TEST(StallDetector, HighOrdersExhaustedWithMemoryAvailableIsFragmentationStall) {
  // 128 GiB host, 60 GiB available, Normal has nothing at orders 9-10 (spark-128g fixture).
  auto a = make_sample(0s, 128ull << 20, 60ull << 20, 10 << 20, "spark-128g-1node.buddyinfo", k_quiet);
  auto b = make_sample(1s, 128ull << 20, 60ull << 20, 10 << 20, "spark-128g-1node.buddyinfo", k_quiet);
  StallDetector d;
  auto ev = d.feed(interval_between(a, b), {});
  // Only ZONE_DMA's 3 order-10 blocks remain at order >= 9, and DMA serves no ordinary allocation.
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, "fragmentation_stall");
  EXPECT_EQ(ev[0].data["node"], 0);
  ASSERT_EQ(ev[0].data["zones"].size(), 2u);  // DMA32 and Normal
  EXPECT_EQ(ev[0].data["zones"][1]["zone"], "Normal");
  EXPECT_EQ(ev[0].data["zones"][1]["high_orders"][1]["fragmentation_index"], "0.998");
  EXPECT_NE(ev[0].summary.find("Normal fragmentation index 0.995"), std::string::npos) << ev[0].summary;
  // Two nodes: node 0 has order-10 blocks in Normal, node 1 nothing above order 7.
  auto c = make_sample(0s, 512ull << 20, 300ull << 20, 10 << 20, "ws-512g-2node.buddyinfo", k_quiet);
  auto e = make_sample(1s, 512ull << 20, 300ull << 20, 10 << 20, "ws-512g-2node.buddyinfo", k_quiet);
  StallDetector d2;
  ev = d2.feed(interval_between(c, e), {});
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, "fragmentation_stall");
  EXPECT_EQ(ev[0].data["node"], 1);
  EXPECT_EQ(ev[0].data["zones"][0]["high_orders"][0]["order"], 9);
  EXPECT_EQ(ev[0].data["zones"][0]["high_orders"][0]["fragmentation_index"], "0.995");
  EXPECT_FALSE(ev[0].hint.empty());
  // Same state again within the cooldown: not repeated.
  auto f = make_sample(2s, 512ull << 20, 300ull << 20, 10 << 20, "ws-512g-2node.buddyinfo", k_quiet);
  EXPECT_TRUE(d2.feed(interval_between(e, f), {}).empty());
}

TEST(StallDetector, ExhaustedButLittleAvailableIsNotFragmentation) {
  // Node 1 exhausted, but only 10% available: lack of memory, not fragmentation.
  auto c = make_sample(0s, 512ull << 20, 51ull << 20, 10 << 20, "ws-512g-2node.buddyinfo", k_quiet);
  auto e = make_sample(1s, 512ull << 20, 51ull << 20, 10 << 20, "ws-512g-2node.buddyinfo", k_quiet);
  StallDetector d;
  EXPECT_TRUE(d.feed(interval_between(c, e), {}).empty());
}

TEST(StallDetector, ReclaimStormFromVmstatRatesAndPsi) {
  auto a =
      make_sample(0s, 24 << 20, 2 << 20, 1 << 20, "vm-24g-1node.buddyinfo",
                  "allocstall_normal 100\nallocstall_movable 0\npgscan_direct 1000\npgsteal_direct 10\noom_kill 0\n");
  auto b =
      make_sample(2s, 24 << 20, 2 << 20, 1 << 20, "vm-24g-1node.buddyinfo",
                  "allocstall_normal 180\nallocstall_movable 40\npgscan_direct 2000\npgsteal_direct 20\noom_kill 0\n");
  StallDetector d;
  auto ev = d.feed(interval_between(a, b), {});
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, "reclaim_storm");
  EXPECT_DOUBLE_EQ(ev[0].data["allocstall_per_s"].get<double>(), 60.0);  // (80 + 40) / 2 s
  EXPECT_NE(ev[0].summary.find("60 direct reclaims/s"), std::string::npos) << ev[0].summary;
  // Below every threshold except PSI.
  StallDetector p;
  auto c = make_sample(0s, 24 << 20, 2 << 20, 1 << 20, "vm-24g-1node.buddyinfo", k_quiet);
  auto e = make_sample(1s, 24 << 20, 2 << 20, 1 << 20, "vm-24g-1node.buddyinfo", k_quiet, 35.0);
  ev = p.feed(interval_between(c, e), {});
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_NE(ev[0].summary.find("PSI some avg10 35.0%"), std::string::npos);
}

TEST(StallDetector, PsiTriggerCountsOnlyWithDirectReclaim) {
  auto a =
      make_sample(0s, 24 << 20, 2 << 20, 1 << 20, "vm-24g-1node.buddyinfo", "allocstall_normal 0\npgscan_direct 0\n");
  auto b =
      make_sample(1s, 24 << 20, 2 << 20, 1 << 20, "vm-24g-1node.buddyinfo", "allocstall_normal 0\npgscan_direct 0\n");
  auto c =
      make_sample(2s, 24 << 20, 2 << 20, 1 << 20, "vm-24g-1node.buddyinfo", "allocstall_normal 2\npgscan_direct 64\n");
  StallDetector d;
  auto quiet = interval_between(a, b);
  quiet.psi_triggered = true;
  EXPECT_TRUE(d.feed(quiet, {}).empty()) << "a trigger without direct reclaim is not a storm";
  auto busy = interval_between(b, c);
  busy.psi_triggered = true;
  auto ev = d.feed(busy, {});
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, "reclaim_storm");
  EXPECT_EQ(ev[0].data["psi_trigger"], true);
  EXPECT_NE(ev[0].summary.find("PSI trigger fired during direct reclaim"), std::string::npos);
}

TEST(StallDetector, PagecacheFloodOnlyAboveRateAndInWindowWhenAsked) {
  auto a = make_sample(0s, 128ull << 20, 100ull << 20, 1ull << 20, "vm-24g-1node.buddyinfo", k_quiet);
  auto b = make_sample(2s, 128ull << 20, 98ull << 20, 5ull << 20, "vm-24g-1node.buddyinfo", k_quiet);  // +4 GiB in 2 s
  StallDetector d;
  auto ev = d.feed(interval_between(a, b), {});
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, "pagecache_flood");
  EXPECT_DOUBLE_EQ(ev[0].data["growth_bytes_per_s"].get<double>(), 2.0 * (1ull << 30));
  StallThresholds t;
  t.pagecache_only_in_window = true;
  StallDetector w(t);
  EXPECT_TRUE(w.feed(interval_between(a, b), {}, false).empty());
  auto in_window = w.feed(interval_between(a, b), {}, true);
  ASSERT_EQ(in_window.size(), 1u);
  // Inside a window the hint is about the window, not about opening one.
  EXPECT_NE(in_window[0].hint.find("inside a load window"), std::string::npos) << in_window[0].hint;
  EXPECT_NE(ev[0].hint.find("open a load window"), std::string::npos) << ev[0].hint;
  // 0.5 GiB/s: below the 1 GiB/s default.
  auto c = make_sample(4s, 128ull << 20, 98ull << 20, 6ull << 20, "vm-24g-1node.buddyinfo", k_quiet);
  StallDetector slow;
  EXPECT_TRUE(slow.feed(interval_between(b, c), {}).empty());
}

MmEvent oom_event(uint32_t pid, const char* comm, bool memcg) {
  MmEvent e;
  e.raw.type = MM_EVENT_OOM_VICTIM;
  e.raw.pid = pid;
  e.raw.flags = memcg ? MM_EF_MEMCG_OOM : MM_EF_GLOBAL_OOM;
  e.raw.memcg_id = 77;
  e.raw.oom_memcg_id = memcg ? 77 : 0;
  e.raw.rss_anon_kb = 30 * 1024;
  e.comm = comm;
  e.memcg_path = "/srv/llama";
  e.oom_memcg_path = memcg ? "/srv/llama" : "";
  return e;
}

TEST(StallDetector, OomKillFromProbeEventsAndVmstatFallback) {
  auto a = make_sample(0s, 24 << 20, 20 << 20, 1 << 20, "vm-24g-1node.buddyinfo", "oom_kill 3\n");
  auto b = make_sample(1s, 24 << 20, 20 << 20, 1 << 20, "vm-24g-1node.buddyinfo", "oom_kill 5\n");
  StallDetector d;
  // Two kills in vmstat; the probes saw both: two oom_kill events with details, no fallback one.
  auto ev = d.feed(interval_between(a, b), {oom_event(42, "llama-server", true), oom_event(43, "python3", false)});
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, "oom_kill");
  EXPECT_EQ(ev[0].data["scope"], "memcg");
  EXPECT_EQ(ev[0].data["comm"], "llama-server");
  EXPECT_NE(ev[0].summary.find("/srv/llama"), std::string::npos);
  EXPECT_EQ(ev[1].data["scope"], "global");
  EXPECT_NE(ev[1].summary.find("whole host"), std::string::npos);
  // Procfs only: the vmstat count stands in.
  StallDetector p;
  ev = p.feed(interval_between(a, b), {});
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, "oom_kill");
  EXPECT_EQ(ev[0].data["vmstat_oom_kill"], 2);
}

TEST(StallDetector, LongDirectStallEventIsFragmentationStall) {
  StallDetector d;
  MmEvent e;
  e.raw.type = MM_EVENT_STALL;
  e.raw.pid = 7;
  e.raw.stall_kind = MM_HIST_COMPACTION_DIRECT;
  e.raw.order = 9;
  e.raw.duration_ns = 120'000'000;
  e.comm = "cuda-loader";
  auto now = std::chrono::system_clock::now();
  auto ev = d.on_event(e, now);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->type, "fragmentation_stall");
  EXPECT_EQ(ev->subject, "7");
  EXPECT_NE(ev->summary.find("stalled 120.0 ms in compaction_direct for an order-9 allocation"), std::string::npos)
      << ev->summary;
  EXPECT_FALSE(d.on_event(e, now + 1s)) << "cooldown";
  e.raw.duration_ns = 10'000'000;  // below 50 ms
  StallDetector fresh;
  EXPECT_FALSE(fresh.on_event(e, now));
  e.raw.duration_ns = 500'000'000;
  e.raw.stall_kind = MM_HIST_COMPACTION_OTHER;  // kcompactd: nobody waited
  EXPECT_FALSE(fresh.on_event(e, now));
}

}  // namespace
}  // namespace spark
