// settle_probe: how long an NVML probe takes (open + init + memory query of each device, then warm
// queries) and how long the settle wait takes when forced on this host's GPUs.
// Usage: settle_probe [REPEAT=20] [SETTLE_MAX_MS=2000]   (SPARK_TUNE_NVML_LIB picks the library)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "gpu/gpu_probe.h"

int main(int argc, char** argv) {
  using namespace spark;
  using namespace std::chrono;
  int repeat = argc > 1 ? std::atoi(argv[1]) : 20;
  auto settle_max = milliseconds(argc > 2 ? std::atoi(argv[2]) : 2000);
  GpuProbe probe;
  auto t0 = steady_clock::now();
  auto first = probe.sample({}, t0 + seconds(30), true);
  auto cold = duration_cast<microseconds>(steady_clock::now() - t0);
  if (!first) {
    std::printf("probe failed: %s\n", first.error().what());
    return 1;
  }
  std::printf("library: %s\n", nvml_library_path().c_str());
  std::printf("cold probe (dlopen + nvmlInit + %zu devices + process lists): %.3f ms\n", first->devices.size(),
              cold.count() / 1000.0);
  for (const auto& d : first->devices)
    std::printf("  GPU %u %s: free %.2f GiB of %.2f GiB%s\n", d.index, d.name.c_str(), d.free / 1073741824.0,
                d.total / 1073741824.0, d.unified ? " (unified memory)" : "");
  std::printf("  compute processes known: %s (%zu)\n", first->processes_known ? "yes" : "no", first->processes.size());
  std::vector<double> warm;
  for (int i = 0; i < repeat; ++i) {
    auto t = steady_clock::now();
    auto s = probe.sample({}, t + seconds(10), false);
    if (!s) {
      std::printf("warm probe failed: %s\n", s.error().what());
      return 1;
    }
    warm.push_back(duration_cast<microseconds>(steady_clock::now() - t).count() / 1000.0);
  }
  std::sort(warm.begin(), warm.end());
  std::printf("warm probe (thread + all devices), %d runs: min %.3f ms, median %.3f ms, max %.3f ms\n", repeat,
              warm.front(), warm[warm.size() / 2], warm.back());
  auto start = steady_clock::now();
  auto s = probe.sample({}, start + settle_max, false);
  if (!s) {
    std::printf("settle: first sample failed: %s\n", s.error().what());
    return 1;
  }
  auto out = settle_wait(HostPaths::system(), probe, {}, std::move(*s), start, settle_max);
  std::printf("forced settle (bound %lld ms): %s after %lld ms, %d samples%s%s\n",
              static_cast<long long>(settle_max.count()), out.settled ? "settled" : "NOT settled",
              static_cast<long long>(out.elapsed.count()), out.samples, out.note.empty() ? "" : ": ",
              out.note.c_str());
  return 0;
}
