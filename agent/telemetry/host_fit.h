// Will a load of N bytes fit in host RAM, and is free memory in blocks large enough for pinned or
// huge-page-backed allocations? The host RAM rule (MemAvailable >= bytes x factor + headroom) and a
// per-node fragmentation check from /proc/buddyinfo, with an optional compaction and re-check.
// /proc/meminfo and /proc/buddyinfo come from the shared readers (telemetry/meminfo.h, buddyinfo.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "telemetry/buddyinfo.h"

namespace spark::telemetry {

inline constexpr double k_default_factor = 1.1;
inline constexpr uint64_t k_default_headroom = 1ull << 30;  // 1 GiB

// The RAM rule.
struct RamFit {
  uint64_t need = 0;       // bytes x factor + headroom
  uint64_t available = 0;  // MemAvailable
  bool fits = false;
  uint64_t missing() const { return fits ? 0 : need - available; }
};
RamFit ram_fit(uint64_t bytes, double factor, uint64_t headroom, uint64_t available);

// Free blocks of one NUMA node, summed over its zones: blocks[order] = number of free 2^order page blocks.
struct NodeBuddy {
  int node = 0;
  std::vector<uint64_t> blocks;
};
std::vector<NodeBuddy> node_blocks(const BuddyInfo& info);
Result<std::vector<NodeBuddy>> read_node_buddy(const HostPaths& paths);

// When a node counts as fragmented. Free memory "in large blocks" means blocks of at least
// large_order (2 MiB with 4 KiB pages: what a huge page, or a large pinned chunk, needs).
// Ratio-based on purpose: with deferred struct-page init the buddy allocator holds only part of
// MemFree, so comparing buddyinfo totals with meminfo would be wrong.
struct FragPolicy {
  int large_order = 9;
  double warn_share = 0.50;    // warn when less than half of the free memory is in large blocks
  double refuse_share = 0.10;  // refuse when less than a tenth is
  uint64_t min_free =
      64ull << 20;  // nodes with less free memory than this are not judged (no memory, not fragmentation)
};
// large_order for 2 MiB blocks with this page size.
int large_order_for_page_size(uint64_t page_size);

enum class Severity { ok, warn, refuse };
const char* severity_name(Severity s);

struct NodeFrag {
  int node = 0;
  uint64_t free_bytes = 0;   // in the buddy allocator
  uint64_t large_bytes = 0;  // in blocks >= large_order
  double large_share = 1.0;
  int unusable_index = 0;       // kernel's unusable free space index at large_order, 0..1000
  int fragmentation_index = 0;  // kernel's extfrag index at large_order: -1000 fits, 0 no memory .. 1000 fragmented
  Severity severity = Severity::ok;
  std::string reason;  // empty when ok
};
std::vector<NodeFrag> judge_fragmentation(const std::vector<NodeBuddy>& nodes, uint64_t page_size,
                                          const FragPolicy& policy);
Severity worst(const std::vector<NodeFrag>& nodes);

}  // namespace spark::telemetry
