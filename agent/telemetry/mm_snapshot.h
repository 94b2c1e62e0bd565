// What the always-on memory-management probes count (bpf/mm_probes.bpf.c): latency histograms
// and counters summed over CPUs, and the difference of two snapshots.
#pragma once

#include <array>
#include <cstdint>

#include "mm_events.h"

namespace spark::telemetry {

// A log2 latency histogram summed over CPUs.
struct LatencyHistogram {
  std::array<uint64_t, MM_HIST_SLOTS> slots{};
  uint64_t count = 0;
  uint64_t sum_ns = 0;
  uint64_t max_ns = 0;
  // Upper bound of the slot that holds the p-th quantile (0 < p <= 1); 0 when empty.
  uint64_t quantile_ns(double p) const;
  double mean_ns() const { return count ? static_cast<double>(sum_ns) / static_cast<double>(count) : 0; }
  LatencyHistogram minus(const LatencyHistogram& earlier) const;
};

// Cumulative since the probes were attached.
struct MmCounters {
  std::array<uint64_t, MM_COUNTERS> raw{};
  uint64_t operator[](mm_counter c) const { return raw[c]; }
  uint64_t at(int index) const { return index >= 0 && index < MM_COUNTERS ? raw[index] : 0; }
  MmCounters minus(const MmCounters& earlier) const;
};

struct MmSnapshot {
  MmCounters counters;
  std::array<LatencyHistogram, MM_HIST_KINDS> hists;
  MmSnapshot minus(const MmSnapshot& earlier) const;
};

const char* hist_kind_name(mm_hist_kind k);   // "direct_reclaim", "memcg_reclaim", ...
const char* compact_result_name(int status);  // "success", "skipped", ...

}  // namespace spark::telemetry
