// Who holds host memory: the largest processes (resident set) and cgroups (memory charged), named in
// a refusal so the operator knows what to stop.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/host_paths.h"

namespace spark::telemetry {

struct MemoryHolder {
  std::string name;  // "pid 123 (llama-server)" or the cgroup path
  uint64_t bytes = 0;
};

// The n processes with the largest VmRSS (from /proc/PID/status); unreadable processes are skipped.
std::vector<MemoryHolder> largest_processes(const HostPaths& paths, size_t n);
// The n cgroups (two levels below the root) with the most memory charged: memory.current on cgroup v2,
// memory.usage_in_bytes on the v1 memory hierarchy.
std::vector<MemoryHolder> largest_cgroups(const HostPaths& paths, size_t n);
// The name of a process (comm), or empty.
std::string process_name(const HostPaths& paths, int pid);
// Every process id under <proc>, in directory order.
std::vector<int> process_ids(const HostPaths& paths);

}  // namespace spark::telemetry
