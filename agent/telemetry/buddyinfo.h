// /proc/buddyinfo: free blocks per order, per zone and node. The input of the fragmentation
// indices (frag_index.h), the monitor's per-order bars and the preflight's high-order check.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark::telemetry {

struct ZoneFreeBlocks {
  int node = 0;
  std::string zone;            // "DMA", "DMA32", "Normal", "Movable"
  std::vector<uint64_t> free;  // free[order] = number of free blocks of 2^order pages

  // Free base pages in the zone: sum of free[order] << order.
  uint64_t free_pages() const;
  // Free pages that sit in blocks of at least 2^order pages.
  uint64_t free_pages_at_least(unsigned order) const;
};

struct BuddyInfo {
  std::vector<ZoneFreeBlocks> zones;  // in file order
  // Number of orders the kernel reports (NR_PAGE_ORDERS, 11 on x86-64 4K pages).
  size_t orders() const;
  // Free blocks per order summed over the zones of one node (node < 0: all nodes).
  std::vector<uint64_t> free_blocks(int node = -1) const;
  std::vector<int> nodes() const;
};

// Parses the text of /proc/buddyinfo. Every line must be "Node N, zone NAME c0 c1 ...", all with
// the same number of orders.
Result<BuddyInfo> parse_buddyinfo(const std::string& text);
Result<BuddyInfo> read_buddyinfo(const HostPaths& paths);

}  // namespace spark::telemetry
