// Is this a unified-memory host (DGX Spark / GB10: the GPU allocates from host RAM)? NVML reports
// no dedicated memory for such a device (gpu/nvml.h, GpuMemory::unified). Load windows turn their
// floor on by default there (issue 14 part 2), guards hold a host floor (part 3) and doctor warns
// about a cgroup budget alone.
#pragma once

#include <string>

#include "core/result.h"
#include "gpu/nvml.h"

namespace spark::gpu {

// true when NVML lists at least one device with unified memory; false without NVML (ENOENT) or
// without such a device.
bool unified_memory_host(const std::string& library = nvml_library_path());

}  // namespace spark::gpu
