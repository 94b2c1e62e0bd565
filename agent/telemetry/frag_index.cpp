#include "telemetry/frag_index.h"

#include <cstdio>

namespace spark::telemetry {

ContigPageInfo contig_page_info(const std::vector<uint64_t>& free_blocks, unsigned order) {
  ContigPageInfo info;
  for (unsigned o = 0; o < free_blocks.size(); ++o) {
    uint64_t blocks = free_blocks[o];
    info.free_blocks_total += blocks;
    info.free_pages += blocks << o;
    if (o >= order) info.free_blocks_suitable += blocks << (o - order);
  }
  return info;
}

int fragmentation_index(const std::vector<uint64_t>& free_blocks, unsigned order) {
  // The kernel returns 0 (with a warning) for an order beyond the largest one.
  if (order >= free_blocks.size()) return 0;
  ContigPageInfo info = contig_page_info(free_blocks, order);
  uint64_t requested = uint64_t{1} << order;
  if (info.free_blocks_total == 0) return 0;
  if (info.free_blocks_suitable != 0) return -1000;
  // Integer division at both steps, like div_u64 in the kernel.
  return static_cast<int>(1000 - (1000 + info.free_pages * 1000ULL / requested) / info.free_blocks_total);
}

int unusable_free_index(const std::vector<uint64_t>& free_blocks, unsigned order) {
  ContigPageInfo info = contig_page_info(free_blocks, order);
  if (info.free_pages == 0) return 1000;
  return static_cast<int>((info.free_pages - (info.free_blocks_suitable << order)) * 1000ULL / info.free_pages);
}

std::string format_index(int milli, bool pad) {
  char buf[32];
  // C division truncates toward zero: -1000 prints as "-1.000", like the kernel's seq_printf.
  std::snprintf(buf, sizeof buf, pad ? "%2d.%03d" : "%d.%03d", milli / 1000, milli % 1000);
  return buf;
}

namespace {

template <typename Fn>
std::string format_file(const BuddyInfo& info, bool pad, Fn index) {
  std::string out;
  char head[64];
  for (const auto& z : info.zones) {
    std::snprintf(head, sizeof head, "Node %d, zone %8s ", z.node, z.zone.c_str());
    out += head;
    for (unsigned o = 0; o < z.free.size(); ++o) out += format_index(index(z.free, o), pad) + " ";
    out += "\n";
  }
  return out;
}

}  // namespace

std::string format_extfrag_index_file(const BuddyInfo& info) { return format_file(info, true, fragmentation_index); }

std::string format_unusable_index_file(const BuddyInfo& info) { return format_file(info, false, unusable_free_index); }

}  // namespace spark::telemetry
