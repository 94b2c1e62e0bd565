// Samples free memory of the chosen GPUs through NVML with a deadline on every call (open included),
// and waits for the driver to settle after a GPU holder was killed.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "gpu/deadline.h"
#include "gpu/nvml.h"

namespace spark::gpu {

struct GpuSample {
  std::vector<GpuMemory> devices;     // in the order asked for
  std::vector<GpuProcess> processes;  // on those devices, when asked for and known
  bool processes_known = false;
  std::chrono::microseconds took{0};
};

class GpuProbe {
 public:
  explicit GpuProbe(std::string library = nvml_library_path());
  // The listed devices (all when empty). Errors: ENOENT no NVIDIA driver, ETIMEDOUT the probe did not
  // answer by the deadline (or an earlier one still has not), ERANGE an index beyond the device count,
  // anything else: NVML failed.
  Result<GpuSample> sample(const std::vector<unsigned>& devices, SteadyTime deadline, bool with_processes);

  struct Shared;

 private:
  std::string library_;
  std::shared_ptr<Shared> shared_;
};

// Two samples of one device agree when they differ by at most max(256 MiB, 2% of the larger).
bool samples_agree(uint64_t a, uint64_t b);

struct SettleOutcome {
  bool waited = false;                   // false: nothing to wait for (no recent kill, CPU-only, probe failed)
  bool settled = false;                  // two consecutive samples agreed on every device
  int samples = 0;                       // including the first
  std::chrono::milliseconds elapsed{0};  // since start, probe time included
  GpuSample last;                        // the newest good sample
  std::string note;
};
// Samples every interval until two consecutive samples agree on every device and no exited process is
// still charged on it, never past start + max. The second condition matters: on a real driver (H100,
// 580.x) a killed holder stays listed with all its memory for ~130-190 ms, then free memory jumps in one
// step, so two early samples agree while nothing has been freed yet.
SettleOutcome settle_wait(const HostPaths& paths, GpuProbe& probe, const std::vector<unsigned>& devices,
                          GpuSample first, SteadyTime start, std::chrono::milliseconds max,
                          std::chrono::milliseconds interval = std::chrono::milliseconds(100));

// Was a GPU holder killed recently, so that free memory may still be growing? Signals, cheapest first:
//  - a process NVML still charges on a device has exited (core/proc_stat.h: gone, zombie or exiting): the driver has
//  not
//    finished freeing its memory;
//  - the kernel's oom_kill count (/proc/vmstat) changed since the last preflight looked (remembered in
//    the run directory; with no record, any OOM kill since boot counts).
struct KillSignal {
  bool recent = false;
  std::string why;
};
KillSignal recent_gpu_kill(const HostPaths& paths, const std::vector<GpuProcess>& holders);

}  // namespace spark::gpu
