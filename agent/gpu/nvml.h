// NVIDIA's management library loaded with dlopen at run time: no build-time dependency, and a host
// without the driver gets a clear "not found" (ENOENT) instead of a link error. The library path is
// libnvidia-ml.so.1, or SPARK_TUNE_NVML_LIB when set (tests load a fake with the same ABI).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"

namespace spark::gpu {

struct GpuMemory {
  unsigned index = 0;
  std::string name;
  // Unified memory (GB10 and other integrated GPUs): NVML reports no dedicated memory; the device
  // allocates from host RAM, so its need is accounted against MemAvailable.
  bool unified = false;
  uint64_t total = 0;
  uint64_t free = 0;
  uint64_t used = 0;
};

struct GpuProcess {
  unsigned index = 0;  // device
  int pid = 0;
  uint64_t used = 0;  // bytes; 0 when the driver does not say
};

std::string nvml_library_path();

class Nvml {
 public:
  // dlopen + nvmlInit_v2. ENOENT when the library is absent (no NVIDIA driver); EIO when NVML fails.
  static Result<std::shared_ptr<Nvml>> open(const std::string& library = nvml_library_path());
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  Result<unsigned> device_count();
  Result<GpuMemory> memory(unsigned index);
  // Compute processes on a device; ENOTSUP when this driver has no such call.
  Result<std::vector<GpuProcess>> processes(unsigned index);

  struct Api;

 private:
  Nvml() = default;
  void* lib_ = nullptr;
  std::unique_ptr<Api> api_;
  bool initialised_ = false;
};

}  // namespace spark::gpu
