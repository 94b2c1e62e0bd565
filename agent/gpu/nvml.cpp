#include "gpu/nvml.h"

#include <dlfcn.h>

#include <cstdlib>
#include <type_traits>

namespace spark::gpu {

namespace {

// The few NVML types used, as the C ABI defines them (nvml.h): its names, not the house's.
// NOLINTBEGIN(readability-identifier-naming)
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct nvmlProcessInfo_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
// NOLINTEND(readability-identifier-naming)
constexpr nvmlReturn_t k_nvml_success = 0;
constexpr nvmlReturn_t k_nvml_not_supported = 3;
constexpr nvmlReturn_t k_nvml_insufficient_size = 7;
constexpr unsigned long long k_nvml_value_not_available = ~0ull;

}  // namespace

struct Nvml::Api {
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  nvmlReturn_t (*count)(unsigned int*) = nullptr;
  nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*processes)(nvmlDevice_t, unsigned int*, nvmlProcessInfo_t*) = nullptr;
  const char* (*error_string)(nvmlReturn_t) = nullptr;

  Error fail(nvmlReturn_t rc, const std::string& what) const {
    std::string reason = error_string ? error_string(rc) : "NVML error " + std::to_string(rc);
    int err = rc == k_nvml_not_supported ? ENOTSUP : EIO;
    return Error(err, std::generic_category(), what + ": " + reason);
  }
};

std::string nvml_library_path() {
  if (const char* p = std::getenv("SPARK_TUNE_NVML_LIB"); p && *p) return p;
  return "libnvidia-ml.so.1";
}

Result<std::shared_ptr<Nvml>> Nvml::open(const std::string& library) {
  std::shared_ptr<Nvml> n(new Nvml());
  n->lib_ = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!n->lib_) {
    const char* why = ::dlerror();
    return sys_error(ENOENT, "no NVIDIA driver: loading " + library + " failed (" + (why ? why : "?") + ")");
  }
  n->api_ = std::make_unique<Api>();
  auto& a = *n->api_;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(n->lib_, name));
    return fn != nullptr;
  };
  sym(a.error_string, "nvmlErrorString");
  sym(a.processes, "nvmlDeviceGetComputeRunningProcesses_v3");  // optional
  if (!sym(a.init, "nvmlInit_v2") || !sym(a.shutdown, "nvmlShutdown") || !sym(a.count, "nvmlDeviceGetCount_v2") ||
      !sym(a.handle, "nvmlDeviceGetHandleByIndex_v2") || !sym(a.memory, "nvmlDeviceGetMemoryInfo") ||
      !sym(a.name, "nvmlDeviceGetName"))
    return sys_error(ENOSYS, library + " lacks a required NVML function (driver too old?)");
  if (nvmlReturn_t rc = a.init(); rc != k_nvml_success) return a.fail(rc, "nvmlInit_v2");
  n->initialised_ = true;
  return n;
}

Nvml::~Nvml() {
  if (initialised_ && api_) api_->shutdown();
  if (lib_) ::dlclose(lib_);
}

Result<unsigned> Nvml::device_count() {
  unsigned count = 0;
  if (nvmlReturn_t rc = api_->count(&count); rc != k_nvml_success) return api_->fail(rc, "nvmlDeviceGetCount_v2");
  return count;
}

Result<GpuMemory> Nvml::memory(unsigned index) {
  nvmlDevice_t dev = nullptr;
  std::string where = "GPU " + std::to_string(index);
  if (nvmlReturn_t rc = api_->handle(index, &dev); rc != k_nvml_success)
    return api_->fail(rc, where + ": nvmlDeviceGetHandleByIndex_v2");
  GpuMemory m;
  m.index = index;
  char name[96] = {};
  if (api_->name(dev, name, sizeof name) == k_nvml_success) m.name = name;
  nvmlMemory_t mem{};
  nvmlReturn_t rc = api_->memory(dev, &mem);
  if (rc == k_nvml_not_supported || (rc == k_nvml_success && mem.total == 0)) {
    m.unified = true;
    return m;
  }
  if (rc != k_nvml_success) return api_->fail(rc, where + ": nvmlDeviceGetMemoryInfo");
  m.total = mem.total;
  m.free = mem.free;
  m.used = mem.used;
  return m;
}

Result<std::vector<GpuProcess>> Nvml::processes(unsigned index) {
  if (!api_->processes) return sys_error(ENOTSUP, "this NVML has no nvmlDeviceGetComputeRunningProcesses_v3");
  nvmlDevice_t dev = nullptr;
  std::string where = "GPU " + std::to_string(index);
  if (nvmlReturn_t rc = api_->handle(index, &dev); rc != k_nvml_success)
    return api_->fail(rc, where + ": nvmlDeviceGetHandleByIndex_v2");
  std::vector<nvmlProcessInfo_t> infos(16);
  for (int attempt = 0; attempt < 4; ++attempt) {
    unsigned count = static_cast<unsigned>(infos.size());
    nvmlReturn_t rc = api_->processes(dev, &count, infos.data());
    if (rc == k_nvml_insufficient_size) {
      infos.resize(count + 8);
      continue;
    }
    if (rc != k_nvml_success) return api_->fail(rc, where + ": nvmlDeviceGetComputeRunningProcesses_v3");
    std::vector<GpuProcess> out;
    for (unsigned i = 0; i < count && i < infos.size(); ++i) {
      uint64_t used = infos[i].usedGpuMemory == k_nvml_value_not_available ? 0 : infos[i].usedGpuMemory;
      out.push_back({index, static_cast<int>(infos[i].pid), used});
    }
    return out;
  }
  return sys_error(EIO, where + ": process list keeps growing");
}

}  // namespace spark::gpu
