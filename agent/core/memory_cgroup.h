// Where the memory cgroup controller is and which memory cgroup a process is in: the one detector
// every part uses (guards, doctor, preflight's cgroup list, tests and benches).
//
// The order, what real hosts run:
//   1. cgroup v2 unified at <cgroup> with "memory" in cgroup.controllers (systemd's default; where
//      <cgroup> is cgroup2 but lacks the memory controller there is none: ENOTSUP);
//   2. the cgroup v1 memory hierarchy at <cgroup>/memory (legacy, and hybrid hosts where cgroup2
//      is mounted at <cgroup>/unified without controllers: `hybrid` says so);
//   3. hybrid with the memory controller on the cgroup2 side: cgroup2 at <cgroup>/unified with
//      "memory" in its cgroup.controllers.
#pragma once

#include <sys/types.h>

#include <string>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark {

enum class CgroupVersion { v1, v2 };

struct MemoryHierarchy {
  CgroupVersion version = CgroupVersion::v1;
  std::string prefix;   // Target name prefix under HostPaths::cgroup: "memory" (v1), "" or "unified" (v2)
  fs::path root;        // HostPaths::cgroup / prefix
  bool hybrid = false;  // a v1 hierarchy and a cgroup2 tree side by side (<cgroup>/unified)
};

// The memory controller's hierarchy, in the order above; ENOTSUP with what to do when there is none.
Result<MemoryHierarchy> find_memory_hierarchy(const HostPaths& paths);

// The memory cgroup in the text of /proc/PID/cgroup for that hierarchy: the "0::PATH" line (v2),
// the line whose controllers hold "memory" (v1). "/" for the root. ENOENT when there is none.
Result<std::string> memory_cgroup_in(const std::string& proc_pid_cgroup, CgroupVersion version);
// A process's memory cgroup, "/process_api/e06..." ("/" for the root), from <proc>/<pid>/cgroup.
// pid 0 reads <proc>/self/cgroup. ESRCH when the process is gone.
Result<std::string> memory_cgroup_of(const HostPaths& paths, const MemoryHierarchy& h, pid_t pid);

}  // namespace spark
