#include "telemetry/buddyinfo.h"

#include <algorithm>
#include <sstream>

#include "core/fs.h"

namespace spark::telemetry {

uint64_t ZoneFreeBlocks::free_pages() const { return free_pages_at_least(0); }

uint64_t ZoneFreeBlocks::free_pages_at_least(unsigned order) const {
  uint64_t pages = 0;
  for (size_t o = order; o < free.size(); ++o) pages += free[o] << o;
  return pages;
}

size_t BuddyInfo::orders() const { return zones.empty() ? 0 : zones.front().free.size(); }

std::vector<uint64_t> BuddyInfo::free_blocks(int node) const {
  std::vector<uint64_t> sum(orders(), 0);
  for (const auto& z : zones) {
    if (node >= 0 && z.node != node) continue;
    for (size_t o = 0; o < z.free.size() && o < sum.size(); ++o) sum[o] += z.free[o];
  }
  return sum;
}

std::vector<int> BuddyInfo::nodes() const {
  std::vector<int> out;
  for (const auto& z : zones)
    if (std::find(out.begin(), out.end(), z.node) == out.end()) out.push_back(z.node);
  return out;
}

Result<BuddyInfo> parse_buddyinfo(const std::string& text) {
  BuddyInfo info;
  int line_no = 0;
  for (const auto& raw : split_lines(text)) {
    ++line_no;
    std::string line = trim(raw);
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      return input_error("buddyinfo line " + std::to_string(line_no) + ": " + why + ": \"" + line + "\"");
    };
    // "Node 0, zone   Normal   6429 ..."
    std::istringstream in(line);
    std::string word_node, node_text, word_zone;
    ZoneFreeBlocks z;
    in >> word_node >> node_text >> word_zone >> z.zone;
    if (word_node != "Node" || word_zone != "zone" || node_text.empty() || node_text.back() != ',' || z.zone.empty())
      return bad("expected \"Node N, zone NAME counts...\"");
    node_text.pop_back();
    try {
      size_t used = 0;
      z.node = std::stoi(node_text, &used);
      if (used != node_text.size() || z.node < 0) return bad("bad node number");
    } catch (const std::exception&) {
      return bad("bad node number");
    }
    std::string count;
    while (in >> count) {
      if (count.find_first_not_of("0123456789") != std::string::npos) return bad("bad free block count");
      try {
        z.free.push_back(std::stoull(count));
      } catch (const std::exception&) {
        return bad("free block count out of range");
      }
    }
    if (z.free.empty()) return bad("no free block counts");
    if (!info.zones.empty() && z.free.size() != info.orders())
      return bad("number of orders differs from the first line");
    info.zones.push_back(std::move(z));
  }
  if (info.zones.empty()) return input_error("buddyinfo has no zones");
  return info;
}

Result<BuddyInfo> read_buddyinfo(const HostPaths& paths) {
  return read_parsed(paths.proc / "buddyinfo", parse_buddyinfo);
}

}  // namespace spark::telemetry
