// /proc/vmstat counters and their rates between two samples.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark::telemetry {

struct VmStat {
  std::map<std::string, uint64_t> counters;
  uint64_t get(const std::string& name) const;  // 0 when the kernel does not have it
  bool has(const std::string& name) const { return counters.count(name) != 0; }
  // Sum of every counter whose name starts with prefix ("allocstall_", "pgsteal_", "pgalloc_").
  uint64_t sum_prefix(const std::string& prefix) const;
};

Result<VmStat> parse_vmstat(const std::string& text);
Result<VmStat> read_vmstat(const HostPaths& paths);

// The change of the event counters over an interval. A counter that went backwards (a gauge such
// as nr_free_pages, or a reset) has delta 0 and is listed in `decreased`.
struct VmStatDelta {
  double seconds = 0;
  std::map<std::string, uint64_t> delta;
  std::map<std::string, int64_t> decreased;
  uint64_t get(const std::string& name) const;
  uint64_t sum_prefix(const std::string& prefix) const;
  double rate(const std::string& name) const { return seconds > 0 ? static_cast<double>(get(name)) / seconds : 0; }
  double rate_prefix(const std::string& prefix) const {
    return seconds > 0 ? static_cast<double>(sum_prefix(prefix)) / seconds : 0;
  }
};
VmStatDelta vmstat_delta(const VmStat& before, const VmStat& after, double seconds);

}  // namespace spark::telemetry
