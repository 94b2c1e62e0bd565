// The kernel's external-fragmentation indices, computed from buddyinfo exactly as mm/vmstat.c
// does for debugfs extfrag/ (fill_contig_page_info, __fragmentation_index, unusable_free_index),
// so no debugfs mount is needed. Values are in thousandths, like the kernel's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "telemetry/buddyinfo.h"

namespace spark::telemetry {

// The kernel's struct contig_page_info for one zone and one requested order.
struct ContigPageInfo {
  uint64_t free_pages = 0;            // free base pages in the zone
  uint64_t free_blocks_total = 0;     // free blocks of any order
  uint64_t free_blocks_suitable = 0;  // free blocks of 2^order pages the zone could hand out
};
ContigPageInfo contig_page_info(const std::vector<uint64_t>& free_blocks, unsigned order);

// Fragmentation index in thousandths: -1000 when an allocation of this order would succeed,
// 0 when no free memory, towards 0 when it would fail for lack of memory, towards 1000 when it
// would fail because the free memory is fragmented.
int fragmentation_index(const std::vector<uint64_t>& free_blocks, unsigned order);
// Unusable free space index in thousandths: the share of free memory in blocks smaller than
// 2^order pages (1000 when nothing is free).
int unusable_free_index(const std::vector<uint64_t>& free_blocks, unsigned order);

// Thousandths as the kernel prints them: "%d.%03d" (unusable) or "%2d.%03d" (extfrag, pad=true).
std::string format_index(int milli, bool pad = false);
// Whole files as debugfs prints them: extfrag/extfrag_index and extfrag/unusable_index.
std::string format_extfrag_index_file(const BuddyInfo& info);
std::string format_unusable_index_file(const BuddyInfo& info);

}  // namespace spark::telemetry
