#include "telemetry/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/fs.h"

using spark::telemetry::LatencyHistogram, spark::telemetry::MetricsExtras, spark::telemetry::MmSnapshot,
    spark::telemetry::TelemetrySample, spark::telemetry::parse_buddyinfo, spark::telemetry::parse_psi,
    spark::telemetry::parse_vmstat, spark::telemetry::render_metrics;

namespace spark {
namespace {

TelemetrySample sample_with_probes() {
  std::ifstream in(std::string(SPARK_TUNE_TEST_FIXTURES) + "/buddyinfo/ws-512g-2node.buddyinfo");
  std::stringstream ss;
  ss << in.rdbuf();
  TelemetrySample s;
  s.mem = *parse_meminfo("MemTotal: 1000 kB\nMemAvailable: 600 kB\nCached: 100 kB\n");
  s.buddy = *parse_buddyinfo(ss.str());
  s.vmstat = *parse_vmstat("nr_free_pages 5\ncompact_stall 7\nallocstall_normal 3\noom_kill 1\npgfault 99\n");
  s.psi = *parse_psi(
      "some avg10=1.50 avg60=0.00 avg300=0.00 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
  MmSnapshot p;
  p.counters.raw[MM_C_OOM_VICTIM] = 2;
  p.counters.raw[MM_C_EXTFRAG_FALLBACK_ORDER + 10] = 5;
  p.counters.raw[MM_C_COMPACT_STATUS + 8] = 4;  // success
  LatencyHistogram& h = p.hists[MM_HIST_DIRECT_RECLAIM];
  h.slots[10] = 3;  // [1024, 2048) ns
  h.slots[20] = 1;  // ~1 ms
  h.count = 4;
  h.sum_ns = 3 * 1500 + 1500000;
  s.probes = p;
  return s;
}

TEST(Metrics, ExpositionHasTheSignals) {
  MetricsExtras x;
  x.probes_attached = 11;
  x.probes_total = 11;
  x.detected_events_total["oom_kill"] = 2;
  std::string text = render_metrics(sample_with_probes(), x);
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("spark_tune_memory_bytes{field=\"MemAvailable\"} 614400")) << text;
  EXPECT_TRUE(has("spark_tune_fragmentation_index{node=\"1\",zone=\"Normal\",order=\"9\"} 0.995"));
  EXPECT_TRUE(has("spark_tune_fragmentation_index{node=\"1\",zone=\"Normal\",order=\"7\"} -1"));
  EXPECT_TRUE(has("spark_tune_unusable_free_index{node=\"1\",zone=\"Normal\",order=\"2\"} 0.386"));
  EXPECT_TRUE(has("spark_tune_buddy_free_blocks{node=\"0\",zone=\"Normal\",order=\"10\"} 30511"));
  EXPECT_TRUE(has("spark_tune_vmstat_total{counter=\"compact_stall\"} 7"));
  EXPECT_TRUE(has("spark_tune_vmstat_total{counter=\"oom_kill\"} 1"));
  EXPECT_EQ(text.find("counter=\"nr_free_pages\""), std::string::npos);  // gauges are not counters
  EXPECT_TRUE(has("spark_tune_psi_memory_stall_seconds_total{kind=\"some\"} 2.5"));
  // PSI averages in base units (a ratio), not the kernel's percent: avg10=1.50 is 0.015.
  EXPECT_TRUE(has("spark_tune_psi_memory_avg_ratio{kind=\"some\",window=\"10s\"} 0.015")) << text;
  EXPECT_EQ(text.find("avg_percent"), std::string::npos);
  EXPECT_TRUE(has("spark_tune_oom_victims_total 2"));
  EXPECT_TRUE(has("spark_tune_extfrag_fallbacks_total{fallback_order=\"10\"} 5"));
  EXPECT_TRUE(has("spark_tune_compaction_runs_total{outcome=\"success\"} 4"));
  EXPECT_TRUE(has("spark_tune_detected_events_total{event=\"oom_kill\"} 2"));
  EXPECT_TRUE(has("spark_tune_bpf_probes_attached 11"));
  // Histogram: cumulative buckets in seconds; slot 10's upper bound is 2048 ns.
  EXPECT_TRUE(has("spark_tune_reclaim_latency_seconds_bucket{kind=\"direct\",le=\"2.048e-06\"} 3")) << text;
  EXPECT_TRUE(has("spark_tune_reclaim_latency_seconds_bucket{kind=\"direct\",le=\"+Inf\"} 4"));
  EXPECT_TRUE(has("spark_tune_reclaim_latency_seconds_count{kind=\"direct\"} 4"));
  EXPECT_TRUE(has("# TYPE spark_tune_reclaim_latency_seconds histogram"));
  // Every sample line is well formed: name{labels} value.
  std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? [-+0-9.eInfa]+$)");
  for (const auto& line : split_lines(text)) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << line;
  }
}

TEST(Metrics, ProcfsOnlyHasNoBpfFamilies) {
  TelemetrySample s = sample_with_probes();
  s.probes.reset();
  std::string text = render_metrics(s, {});
  EXPECT_EQ(text.find("spark_tune_reclaim_latency_seconds"), std::string::npos);
  EXPECT_NE(text.find("spark_tune_bpf_probes_attached 0\n"), std::string::npos);
  EXPECT_NE(text.find("spark_tune_fragmentation_index"), std::string::npos);
}

// Issue 12, defect 3: counters by order have a series (0) for every order the host has before
// the first count, so rate() sees the first increase.
TEST(Metrics, CountersByOrderStartAtZeroForEveryOrder) {
  TelemetrySample s = sample_with_probes();
  s.probes = MmSnapshot{};
  std::string text = render_metrics(s, {});
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  size_t orders = 0;
  for (const auto& z : s.buddy.zones) orders = std::max(orders, z.free.size());
  ASSERT_EQ(orders, 11u);
  for (size_t o = 0; o < orders; ++o) {
    std::string l = std::to_string(o);
    EXPECT_TRUE(has("spark_tune_direct_compaction_total{order=\"" + l + "\"} 0")) << text;
    EXPECT_TRUE(has("spark_tune_extfrag_fallbacks_total{fallback_order=\"" + l + "\"} 0")) << text;
  }
  // A count at an order past the host's own still shows.
  s.probes->counters.raw[MM_C_COMPACT_TRY_ORDER + 12] = 3;
  text = render_metrics(s, {});
  EXPECT_TRUE(has("spark_tune_direct_compaction_total{order=\"12\"} 3")) << text;
  EXPECT_TRUE(has("spark_tune_direct_compaction_total{order=\"0\"} 0")) << text;
}

// Index values are the kernel's thousandths, printed as the kernel prints them (3 decimals at
// most), never float noise such as 0.008999999999999999.
TEST(Metrics, IndexValuesHaveAtMostThreeDecimals) {
  std::string text = render_metrics(sample_with_probes(), {});
  std::regex index_line(R"(^spark_tune_(fragmentation|unusable_free)_index\{[^}]*\} (.*)$)");
  std::regex three_decimals(R"(^-?[0-9]+(\.[0-9]{1,3})?$)");
  size_t seen = 0, fractional = 0;
  for (const auto& line : split_lines(text)) {
    std::smatch m;
    if (!std::regex_match(line, m, index_line)) continue;
    ++seen;
    std::string v = m[2];
    if (v.find('.') != std::string::npos) ++fractional;
    EXPECT_TRUE(std::regex_match(v, three_decimals)) << line;
  }
  EXPECT_GT(seen, 20u);
  EXPECT_GT(fractional, 5u);
}

}  // namespace
}  // namespace spark
