#include "telemetry/mm_snapshot.h"

#include <algorithm>
#include <cstdint>

namespace spark::telemetry {

uint64_t LatencyHistogram::quantile_ns(double p) const {
  uint64_t total = 0;
  for (auto s : slots) total += s;
  if (total == 0) return 0;
  auto rank = static_cast<uint64_t>(p * static_cast<double>(total));
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    seen += slots[i];
    if (seen >= rank) return std::min<uint64_t>(max_ns ? max_ns : UINT64_MAX, (uint64_t{2} << i) - 1);
  }
  return max_ns;
}

LatencyHistogram LatencyHistogram::minus(const LatencyHistogram& e) const {
  LatencyHistogram d;
  for (size_t i = 0; i < slots.size(); ++i) d.slots[i] = slots[i] >= e.slots[i] ? slots[i] - e.slots[i] : 0;
  d.count = count >= e.count ? count - e.count : 0;
  d.sum_ns = sum_ns >= e.sum_ns ? sum_ns - e.sum_ns : 0;
  d.max_ns = max_ns;  // the maximum since attach: an interval maximum is not recoverable
  return d;
}

MmCounters MmCounters::minus(const MmCounters& e) const {
  MmCounters d;
  for (size_t i = 0; i < raw.size(); ++i) d.raw[i] = raw[i] >= e.raw[i] ? raw[i] - e.raw[i] : 0;
  return d;
}

MmSnapshot MmSnapshot::minus(const MmSnapshot& e) const {
  MmSnapshot d;
  d.counters = counters.minus(e.counters);
  for (size_t i = 0; i < hists.size(); ++i) d.hists[i] = hists[i].minus(e.hists[i]);
  return d;
}

const char* hist_kind_name(mm_hist_kind k) {
  switch (k) {
    case MM_HIST_DIRECT_RECLAIM:
      return "direct_reclaim";
    case MM_HIST_MEMCG_RECLAIM:
      return "memcg_reclaim";
    case MM_HIST_COMPACTION_DIRECT:
      return "compaction_direct";
    case MM_HIST_COMPACTION_OTHER:
      return "compaction_other";
    default:
      return "?";
  }
}

const char* compact_result_name(int status) {
  static const char* names[] = {"not_suitable_zone", "skipped",         "deferred",  "no_suitable_page", "continue",
                                "complete",          "partial_skipped", "contended", "success"};
  return status >= 0 && status < 9 ? names[status] : "other";
}

}  // namespace spark::telemetry
