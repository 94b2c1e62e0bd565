#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/host_paths.h"

namespace spark::telemetry {

// Finds a cgroup directory by its inode (= kernfs id) under the memory hierarchy (v1) or the
// unified one (v2); results are cached.
class CgroupResolver {
 public:
  explicit CgroupResolver(const HostPaths& paths) : paths_(paths) {}
  std::string path_of(uint64_t id);

 private:
  HostPaths paths_;
  std::vector<std::pair<uint64_t, std::string>> cache_;
};

}  // namespace spark::telemetry
