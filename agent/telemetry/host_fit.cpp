#include "telemetry/host_fit.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/fs.h"
#include "core/log.h"
#include "core/units.h"

namespace spark {

namespace {

// Minimal private readers (see the note in host_fit.h): to be replaced by the shared procfs readers.
Result<std::map<std::string, uint64_t>> read_meminfo_kb(const HostPaths& paths) {
  SPARK_TRY(std::string text, read_file(paths.proc / "meminfo"));
  std::map<std::string, uint64_t> out;
  for (const auto& line : split_lines(text)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::istringstream in(line.substr(colon + 1));
    uint64_t v = 0;
    if (in >> v) out[line.substr(0, colon)] = v;
  }
  return out;
}

}  // namespace

Result<HostMemory> read_host_memory(const HostPaths& paths) {
  SPARK_TRY(auto kb, read_meminfo_kb(paths));
  auto total = kb.find("MemTotal");
  auto avail = kb.find("MemAvailable");
  if (total == kb.end() || avail == kb.end())
    return sys_error(ENODATA, "reading " + (paths.proc / "meminfo").string() + ": no MemTotal/MemAvailable line");
  HostMemory m;
  m.total = total->second * 1024;
  m.available = avail->second * 1024;
  m.free = kb.count("MemFree") ? kb["MemFree"] * 1024 : 0;
  return m;
}

RamFit ram_fit(uint64_t bytes, double factor, uint64_t headroom, uint64_t available) {
  RamFit f;
  f.need = static_cast<uint64_t>(std::ceil(static_cast<long double>(bytes) * factor)) + headroom;
  f.available = available;
  f.fits = available >= f.need;
  return f;
}

Result<std::vector<NodeBuddy>> read_buddyinfo(const HostPaths& paths) {
  auto file = paths.proc / "buddyinfo";
  SPARK_TRY(std::string text, read_file(file));
  std::vector<NodeBuddy> nodes;
  for (const auto& line : split_lines(text)) {
    // "Node 0, zone   Normal  10798   8011 ..."
    std::istringstream in(line);
    std::string word, zone_word, zone;
    int node = -1;
    if (!(in >> word) || word != "Node") continue;
    char comma = 0;
    if (!(in >> node >> comma >> zone_word >> zone) || comma != ',' || zone_word != "zone")
      return sys_error(EBADMSG, "reading " + file.string() + ": unexpected line '" + line + "'");
    auto it = std::find_if(nodes.begin(), nodes.end(), [&](const NodeBuddy& n) { return n.node == node; });
    if (it == nodes.end()) {
      nodes.push_back({node, {}});
      it = nodes.end() - 1;
    }
    uint64_t count = 0;
    for (size_t order = 0; in >> count; ++order) {
      if (it->blocks.size() <= order) it->blocks.resize(order + 1, 0);
      it->blocks[order] += count;
    }
  }
  if (nodes.empty()) return sys_error(ENODATA, "reading " + file.string() + ": no Node lines");
  return nodes;
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
    uint64_t free_pages = 0, large_pages = 0, blocks_total = 0, blocks_suitable = 0;
    for (size_t order = 0; order < n.blocks.size(); ++order) {
      free_pages += n.blocks[order] << order;
      blocks_total += n.blocks[order];
      if (order >= large) {
        large_pages += n.blocks[order] << order;
        blocks_suitable += n.blocks[order] << (order - large);
      }
    }
    f.free_bytes = free_pages * page_size;
    f.large_bytes = large_pages * page_size;
    f.large_share = free_pages ? static_cast<double>(large_pages) / static_cast<double>(free_pages) : 1.0;
    // The kernel's two indexes (mm/vmstat.c), computed per node from the same counts.
    f.unusable_index = free_pages ? static_cast<int>((free_pages - large_pages) * 1000 / free_pages) : 0;
    if (blocks_total == 0)
      f.fragmentation_index = 0;
    else if (blocks_suitable)
      f.fragmentation_index = -1000;
    else
      f.fragmentation_index = 1000 - static_cast<int>((1000 + free_pages * 1000 / (1ull << large)) / blocks_total);
    if (f.free_bytes >= policy.min_free) {
      auto describe_share = [&] {
        std::ostringstream s;
        s << "node " << n.node << ": " << format_size(f.free_bytes) << " free but only " << format_size(f.large_bytes)
          << " (" << static_cast<int>(f.large_share * 100 + 0.5) << "%) in blocks of "
          << format_size(page_size << large) << " or more";
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

Result<void> compact_memory(const HostPaths& paths) {
  auto r = write_value(paths.proc_sys("vm/compact_memory"), "1");
  if (!r) return with_context(r.error(), "compacting memory (vm.compact_memory)");
  log_change("vm.compact_memory", "", "1", "preflight", "free memory not in large blocks");
  return {};
}

}  // namespace spark
