#include "gpu/gpu_probe.h"

#include <algorithm>
#include <sstream>

#include "core/fs.h"
#include "core/proc_stat.h"
#include "core/units.h"

namespace spark::gpu {

// The library stays open across samples; a worker that hangs keeps its own reference, and while
// it hangs no new worker is started (busy), so hung threads never pile up.
struct GpuProbe::Shared {
  std::mutex m;
  std::shared_ptr<Nvml> nvml;
  bool busy = false;
};

GpuProbe::GpuProbe(std::string library) : library_(std::move(library)), shared_(std::make_shared<Shared>()) {}

Result<GpuSample> GpuProbe::sample(const std::vector<unsigned>& devices, SteadyTime deadline, bool with_processes) {
  {
    std::lock_guard lock(shared_->m);
    if (shared_->busy) return sys_error(ETIMEDOUT, "the previous GPU probe has not returned yet");
    shared_->busy = true;
  }
  auto shared = shared_;
  std::string library = library_;
  std::function<Result<GpuSample>()> work = [shared, library, devices, with_processes]() -> Result<GpuSample> {
    struct Release {
      std::shared_ptr<Shared> s;
      ~Release() {
        std::lock_guard lock(s->m);
        s->busy = false;
      }
    } release{shared};
    auto t0 = std::chrono::steady_clock::now();
    std::shared_ptr<Nvml> nvml;
    {
      std::lock_guard lock(shared->m);
      nvml = shared->nvml;
    }
    if (!nvml) {
      SPARK_TRY(nvml, Nvml::open(library));
      std::lock_guard lock(shared->m);
      shared->nvml = nvml;
    }
    SPARK_TRY(unsigned count, nvml->device_count());
    std::vector<unsigned> wanted = devices;
    if (wanted.empty())
      for (unsigned i = 0; i < count; ++i) wanted.push_back(i);
    GpuSample s;
    for (unsigned idx : wanted) {
      if (idx >= count)
        return sys_error(ERANGE, "GPU " + std::to_string(idx) + " does not exist (this host has " +
                                     std::to_string(count) + "; indexes start at 0)");
      SPARK_TRY(auto mem, nvml->memory(idx));
      s.devices.push_back(std::move(mem));
    }
    if (with_processes) {
      s.processes_known = true;
      for (unsigned idx : wanted) {
        auto p = nvml->processes(idx);
        if (!p) {
          s.processes_known = false;
          break;
        }
        s.processes.insert(s.processes.end(), p->begin(), p->end());
      }
    }
    s.took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    return s;
  };
  return call_with_deadline(std::move(work), deadline, "GPU probe (NVML)");
}

bool samples_agree(uint64_t a, uint64_t b) {
  uint64_t larger = std::max(a, b);
  uint64_t tolerance = std::max<uint64_t>(256ull << 20, larger / 50);
  return (larger - std::min(a, b)) <= tolerance;
}

namespace {
bool exited_holder_on(const HostPaths& paths, const GpuSample& s, unsigned device) {
  for (const auto& p : s.processes)
    if (p.index == device && !process_alive(paths, p.pid)) return true;
  return false;
}
}  // namespace

SettleOutcome settle_wait(const HostPaths& paths, GpuProbe& probe, const std::vector<unsigned>& devices,
                          GpuSample first, SteadyTime start, std::chrono::milliseconds max,
                          std::chrono::milliseconds interval) {
  using Clock = std::chrono::steady_clock;
  SettleOutcome out;
  out.waited = true;
  out.samples = 1;
  out.last = std::move(first);
  const SteadyTime deadline = start + max;
  for (;;) {
    SteadyTime next = Clock::now() + interval;
    if (next >= deadline) {
      out.note = "free GPU memory still changing after " + format_duration(max) + "; using the last sample";
      break;
    }
    std::this_thread::sleep_until(next);
    auto s = probe.sample(devices, deadline, true);
    if (!s) {
      out.note = std::string("settle stopped: ") + s.error().what() + "; using the last sample";
      break;
    }
    ++out.samples;
    bool agree = s->devices.size() == out.last.devices.size();
    for (size_t i = 0; agree && i < s->devices.size(); ++i)
      agree = samples_agree(s->devices[i].free, out.last.devices[i].free) &&
              !(s->processes_known && exited_holder_on(paths, *s, s->devices[i].index));
    out.last.devices = std::move(s->devices);
    out.last.processes = std::move(s->processes);
    out.last.processes_known = s->processes_known;
    if (agree) {
      out.settled = true;
      break;
    }
  }
  out.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  return out;
}

KillSignal recent_gpu_kill(const HostPaths& paths, const std::vector<GpuProcess>& holders) {
  KillSignal k;
  for (const auto& h : holders) {
    if (!process_alive(paths, h.pid)) {
      k.recent = true;
      k.why = "pid " + std::to_string(h.pid) + " still holds " + format_size(h.used) + " on GPU " +
              std::to_string(h.index) + " but has exited: the driver is still freeing it";
      break;
    }
  }
  // The OOM kill counter against what the last preflight saw.
  auto vmstat = read_file(paths.proc / "vmstat");
  if (vmstat) {
    uint64_t kills = 0;
    for (const auto& line : split_lines(*vmstat))
      if (line.rfind("oom_kill ", 0) == 0) std::istringstream(line.substr(9)) >> kills;
    auto seen_file = paths.run / "oom_kill.seen";
    auto seen = read_value(seen_file);
    bool changed = seen ? *seen != std::to_string(kills) : kills > 0;
    if (changed && !k.recent) {
      k.recent = true;
      k.why = seen ? "the kernel killed a process for memory since the last preflight (oom_kill " + *seen + " -> " +
                         std::to_string(kills) + ")"
                   : "the kernel has killed " + std::to_string(kills) + " process(es) for memory since boot";
    }
    // Written only when it changes: the common path stays free of fsyncs.
    if ((!seen || *seen != std::to_string(kills)) && ensure_dir(paths.run).ok())
      (void)atomic_write(seen_file, std::to_string(kills) + "\n");
  }
  return k;
}

}  // namespace spark::gpu
