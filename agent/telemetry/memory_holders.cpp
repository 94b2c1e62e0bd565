#include "telemetry/memory_holders.h"

#include <algorithm>
#include <sstream>

#include "core/fs.h"
#include "core/memory_cgroup.h"

namespace spark::telemetry {

namespace {

void keep_largest(std::vector<MemoryHolder>& v, size_t n) {
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.bytes > b.bytes; });
  if (v.size() > n) v.resize(n);
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::string process_name(const HostPaths& paths, int pid) {
  return read_value(paths.proc / std::to_string(pid) / "comm").value_or("");
}

std::vector<int> process_ids(const HostPaths& paths) {
  std::vector<int> out;
  std::error_code ec;
  for (fs::directory_iterator it(paths.proc, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (all_digits(name) && name.size() < 10) out.push_back(std::stoi(name));
  }
  return out;
}

std::vector<MemoryHolder> largest_processes(const HostPaths& paths, size_t n) {
  std::vector<MemoryHolder> out;
  for (int id : process_ids(paths)) {
    std::string pid = std::to_string(id);
    auto text = read_file(paths.proc / pid / "status");
    if (!text) continue;  // exited meanwhile
    std::string name;
    uint64_t rss_kb = 0;
    for (const auto& line : split_lines(*text)) {
      if (line.rfind("Name:", 0) == 0) name = trim(line.substr(5));
      if (line.rfind("VmRSS:", 0) == 0) std::istringstream(line.substr(6)) >> rss_kb;
    }
    if (rss_kb) out.push_back({"pid " + pid + " (" + name + ")", rss_kb * 1024});
  }
  keep_largest(out, n);
  return out;
}

std::vector<MemoryHolder> largest_cgroups(const HostPaths& paths, size_t n) {
  std::vector<MemoryHolder> out;
  auto h = find_memory_hierarchy(paths);
  if (!h) return out;
  const fs::path& root = h->root;
  std::string file = h->version == CgroupVersion::v2 ? "memory.current" : "memory.usage_in_bytes";
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it.depth() > 1) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_directory(ec)) continue;
    auto v = read_value(it->path() / file);
    if (!v) continue;
    try {
      out.push_back({"/" + fs::relative(it->path(), root).string(), std::stoull(*v)});
    } catch (const std::exception&) {
    }
  }
  keep_largest(out, n);
  return out;
}

}  // namespace spark::telemetry
