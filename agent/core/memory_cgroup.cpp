#include "core/memory_cgroup.h"

#include <sstream>

#include "core/fs.h"

namespace spark {

namespace {

bool lists_memory(const fs::path& controllers_file) {
  auto c = read_file(controllers_file);
  if (!c) return false;
  std::istringstream in(*c);
  std::string w;
  while (in >> w)
    if (w == "memory") return true;
  return false;
}

bool present(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

}  // namespace

Result<MemoryHierarchy> find_memory_hierarchy(const HostPaths& paths) {
  const fs::path& cg = paths.cgroup;
  if (present(cg / "cgroup.controllers")) {
    // <cgroup> is itself cgroup2 (unified mode): no v1 hierarchy can be mounted below it.
    if (lists_memory(cg / "cgroup.controllers")) return MemoryHierarchy{CgroupVersion::v2, "", cg, false};
    return sys_error(ENOTSUP, "cgroup v2 at " + cg.string() +
                                  " without the memory controller: remove cgroup_disable=memory from the kernel "
                                  "command line");
  }
  bool unified = present(cg / "unified" / "cgroup.controllers");
  // A v1 memory hierarchy shows memory.limit_in_bytes and memory.usage_in_bytes in every cgroup.
  if (present(cg / "memory" / "memory.limit_in_bytes") || present(cg / "memory" / "memory.usage_in_bytes"))
    return MemoryHierarchy{CgroupVersion::v1, "memory", cg / "memory", unified};
  if (unified && lists_memory(cg / "unified" / "cgroup.controllers"))
    return MemoryHierarchy{CgroupVersion::v2, "unified", cg / "unified", true};
  return sys_error(ENOTSUP, "no memory cgroup controller under " + cg.string() +
                                ": mount cgroup2 with the memory controller (or the cgroup v1 memory hierarchy)");
}

Result<std::string> memory_cgroup_in(const std::string& text, CgroupVersion version) {
  for (const auto& line : split_lines(text)) {
    // "hierarchy-ID:controller-list:cgroup-path"; the path may itself hold ':'.
    auto c1 = line.find(':');
    if (c1 == std::string::npos) continue;
    auto c2 = line.find(':', c1 + 1);
    if (c2 == std::string::npos) continue;
    std::string ctrls = line.substr(c1 + 1, c2 - c1 - 1);
    std::string path = line.substr(c2 + 1);
    if (version == CgroupVersion::v2) {
      if (line.compare(0, c1, "0") == 0 && ctrls.empty()) return path;
      continue;
    }
    std::istringstream in(ctrls);
    std::string c;
    while (std::getline(in, c, ','))
      if (c == "memory") return path;
  }
  return sys_error(
      ENOENT, std::string("no ") + (version == CgroupVersion::v2 ? "cgroup v2 (0::)" : "memory controller") + " line");
}

Result<std::string> memory_cgroup_of(const HostPaths& paths, const MemoryHierarchy& h, pid_t pid) {
  fs::path file = paths.proc / (pid == 0 ? std::string("self") : std::to_string(pid)) / "cgroup";
  auto text = read_file(file);
  if (!text) {
    if (text.error().code().value() == ENOENT)
      return sys_error(ESRCH, "process " + std::to_string(pid) + " does not exist");
    return text.error();
  }
  auto path = memory_cgroup_in(*text, h.version);
  if (!path) return sys_error(ENOENT, "no memory cgroup for process " + std::to_string(pid) + " in " + file.string());
  return path;
}

}  // namespace spark
