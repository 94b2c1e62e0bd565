#include "gpu/unified.h"

namespace spark::gpu {

bool unified_memory_host(const std::string& library) {
  auto nvml = Nvml::open(library);
  if (!nvml) return false;
  auto n = (*nvml)->device_count();
  if (!n) return false;
  for (unsigned i = 0; i < *n; ++i)
    if (auto m = (*nvml)->memory(i); m && m->unified) return true;
  return false;
}

}  // namespace spark::gpu
