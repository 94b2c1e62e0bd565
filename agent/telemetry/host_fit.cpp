#include "telemetry/host_fit.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/fs.h"
#include "core/meminfo.h"
#include "core/units.h"
#include "telemetry/frag_index.h"

namespace spark::telemetry {

RamFit ram_fit(uint64_t bytes, double factor, uint64_t headroom, uint64_t available) {
  RamFit f;
  f.need = static_cast<uint64_t>(std::ceil(static_cast<long double>(bytes) * factor)) + headroom;
  f.available = available;
  f.fits = available >= f.need;
  return f;
}

std::vector<NodeBuddy> node_blocks(const BuddyInfo& info) {
  std::vector<NodeBuddy> nodes;
  for (int node : info.nodes()) nodes.push_back({node, info.free_blocks(node)});
  return nodes;
}

Result<std::vector<NodeBuddy>> read_node_buddy(const HostPaths& paths) {
  SPARK_TRY(BuddyInfo info, read_buddyinfo(paths));
  if (info.zones.empty())
    return sys_error(ENODATA, "reading " + (paths.proc / "buddyinfo").string() + ": no Node lines");
  return node_blocks(info);
}

int large_order_for_page_size(uint64_t page_size) {
  int order = 0;
  while (page_size > 0 && (page_size << order) < (2ull << 20)) ++order;
  return order;
}

const char* severity_name(Severity s) {
  switch (s) {
    case Severity::ok:
      return "ok";
    case Severity::warn:
      return "warn";
    case Severity::refuse:
      return "refuse";
  }
  return "?";
}

std::vector<NodeFrag> judge_fragmentation(const std::vector<NodeBuddy>& nodes, uint64_t page_size,
                                          const FragPolicy& policy) {
  std::vector<NodeFrag> out;
  const size_t large = static_cast<size_t>(policy.large_order);
  for (const auto& n : nodes) {
    NodeFrag f;
    f.node = n.node;
    uint64_t free_pages = 0, large_pages = 0;
    for (size_t order = 0; order < n.blocks.size(); ++order) {
      free_pages += n.blocks[order] << order;
      if (order >= large) {
        large_pages += n.blocks[order] << order;
      }
    }
    f.free_bytes = free_pages * page_size;
    f.large_bytes = large_pages * page_size;
    f.large_share = free_pages ? static_cast<double>(large_pages) / static_cast<double>(free_pages) : 1.0;
    // The kernel's two indexes (mm/vmstat.c), computed per node from the same counts.
    f.unusable_index = unusable_free_index(n.blocks, static_cast<unsigned>(large));
    f.fragmentation_index = fragmentation_index(n.blocks, static_cast<unsigned>(large));
    if (f.free_bytes >= policy.min_free) {
      auto describe_share = [&] {
        std::ostringstream s;
        s << "node " << n.node << ": " << format_size(f.free_bytes) << " free but only " << format_size(f.large_bytes)
          << " (" << std::lround(f.large_share * 100) << "%) in blocks of " << format_size(page_size << large)
          << " or more";
        return s.str();
      };
      if (f.large_share < policy.refuse_share) {
        f.severity = Severity::refuse;
        f.reason = describe_share() + ": pinned or huge-page allocations can stall the host";
      } else if (f.large_share < policy.warn_share) {
        f.severity = Severity::warn;
        f.reason = describe_share();
      }
    }
    out.push_back(f);
  }
  return out;
}

Severity worst(const std::vector<NodeFrag>& nodes) {
  Severity s = Severity::ok;
  for (const auto& n : nodes) s = std::max(s, n.severity);
  return s;
}

}  // namespace spark::telemetry
