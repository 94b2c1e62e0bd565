// Who else sets a sysctl: sysctl.d files (in systemd-sysctl's order) and tuned's active profile.
// verify names them when a key drifted; apply --persist warns about files that win over ours.
#pragma once

#include <string>
#include <vector>

#include "core/host_paths.h"

namespace spark::profile {

struct SysctlSource {
  std::string key;
  std::string value;
  std::string source;     // "/etc/sysctl.d/99-foo.conf:3", "tuned profile 'throughput-performance'"
  std::string file_name;  // basename for sysctl.d ordering, empty for tuned
};

// Every assignment of the keys, in the order systemd-sysctl applies them (last wins), then tuned's.
std::vector<SysctlSource> sysctl_sources(const HostPaths& paths, const std::vector<std::string>& keys);

// The drop-in that --persist writes.
inline const char* k_persist_file_name = "90-spark-tune.conf";
std::string persist_dropin_text(const std::string& profile,
                                const std::vector<std::pair<std::string, std::string>>& values);

}  // namespace spark::profile
