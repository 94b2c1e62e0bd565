// settle_probe: how long an NVML probe takes (open + init + memory query of each device, then warm
// queries), how long a forced settle wait takes on idle GPUs, and, with --kill-test GIB, what preflight
// --settle sees right after a real GPU holder (bench/gpu_hog) is SIGKILLed: the naive free reading,
// the kill signal, and when the settle wait ends.
// Usage: settle_probe [--repeat N] [--settle-max MS] [--gpu IDX] [--kill-test GIB] [--kills K]
// (SPARK_TUNE_NVML_LIB picks the library; gpu_hog is looked up next to this executable)
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/fs.h"
#include "gpu/gpu_probe.h"

using spark::gpu::GpuProbe, spark::gpu::nvml_library_path, spark::gpu::recent_gpu_kill, spark::gpu::settle_wait;

extern char** environ;

namespace {

using namespace spark;
using namespace std::chrono;

double ms_since(steady_clock::time_point t) {
  return duration_cast<microseconds>(steady_clock::now() - t).count() / 1000.0;
}
double gib(uint64_t b) { return b / 1073741824.0; }

int kill_test(unsigned gpu, int gib_size, milliseconds settle_max, int kills) {
  auto self = fs::read_symlink(HostPaths::system().proc / "self/exe");
  std::string hog = (self.parent_path() / "gpu_hog").string();
  for (int k = 0; k < kills; ++k) {
    std::string ready = (fs::temp_directory_path() / ("settle_probe_ready_" + std::to_string(::getpid()))).string();
    std::filesystem::remove(ready);
    std::vector<std::string> args = {hog, std::to_string(gpu), std::to_string(gib_size), ready};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (int rc = ::posix_spawn(&pid, hog.c_str(), nullptr, nullptr, argv.data(), environ); rc != 0) {
      std::printf("cannot start %s: %s\n", hog.c_str(), std::strerror(rc));
      return 1;
    }
    auto t_start = steady_clock::now();
    while (!std::filesystem::exists(ready) || std::filesystem::file_size(ready) == 0) {
      if (ms_since(t_start) > 120000 || ::waitpid(pid, nullptr, WNOHANG) == pid) {
        std::printf("gpu_hog did not get ready\n");
        return 1;
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    GpuProbe probe;  // opened before the kill, as a router's long-lived probe would be
    auto warm = probe.sample({gpu}, steady_clock::now() + seconds(10), true);
    if (!warm) {
      std::printf("probe failed: %s\n", warm.error().what());
      return 1;
    }
    std::this_thread::sleep_for(milliseconds(200));
    ::kill(pid, SIGKILL);
    auto t_kill = steady_clock::now();
    std::thread reaper([pid] { ::waitpid(pid, nullptr, 0); });  // as systemd or a router would
    auto first = probe.sample({gpu}, t_kill + settle_max, true);
    if (!first) {
      std::printf("probe after kill failed: %s\n", first.error().what());
      reaper.join();
      return 1;
    }
    double first_ms = ms_since(t_kill);
    uint64_t naive = first->devices[0].free;
    auto signal = recent_gpu_kill(HostPaths::system(), first->processes);
    std::printf(
        "kill %d: held %d GiB; first sample %.2f ms after SIGKILL: free %.2f GiB, %zu holder(s) listed; signal: %s\n",
        k + 1, gib_size, first_ms, gib(naive), first->processes.size(),
        signal.recent ? signal.why.c_str() : "none (settle would not wait)");
    if (signal.recent) {
      auto out = settle_wait(HostPaths::system(), probe, {gpu}, std::move(*first), t_kill, settle_max);
      std::printf("  settle: %s %lld ms after SIGKILL, %d samples, free %.2f GiB%s%s\n",
                  out.settled ? "settled" : "NOT settled", static_cast<long long>(out.elapsed.count()), out.samples,
                  gib(out.last.devices[0].free), out.note.empty() ? "" : ": ", out.note.c_str());
    }
    reaper.join();
    std::filesystem::remove(ready);
    std::this_thread::sleep_for(milliseconds(500));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 20, kills = 3, kill_gib = 0;
  unsigned gpu = 0;
  milliseconds settle_max(2000);
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--repeat")
      repeat = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--settle-max")
      settle_max = milliseconds(std::atoi(argv[i + 1]));
    else if (a == "--gpu")
      gpu = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else if (a == "--kill-test")
      kill_gib = std::atoi(argv[i + 1]);
    else if (a == "--kills")
      kills = std::atoi(argv[i + 1]);
  }
  GpuProbe probe;
  auto t0 = steady_clock::now();
  auto first = probe.sample({}, t0 + seconds(30), true);
  double cold = ms_since(t0);
  if (!first) {
    std::printf("probe failed: %s\n", first.error().what());
    return 1;
  }
  std::printf("library: %s\n", nvml_library_path().c_str());
  std::printf("cold probe (dlopen + nvmlInit + %zu devices + process lists): %.3f ms\n", first->devices.size(), cold);
  for (const auto& d : first->devices)
    std::printf("  GPU %u %s: free %.2f GiB of %.2f GiB%s\n", d.index, d.name.c_str(), gib(d.free), gib(d.total),
                d.unified ? " (unified memory)" : "");
  std::printf("  compute processes known: %s (%zu)\n", first->processes_known ? "yes" : "no", first->processes.size());
  std::vector<double> warm;
  for (int i = 0; i < repeat; ++i) {
    auto t = steady_clock::now();
    auto s = probe.sample({}, t + seconds(10), true);
    if (!s) {
      std::printf("warm probe failed: %s\n", s.error().what());
      return 1;
    }
    warm.push_back(ms_since(t));
  }
  std::sort(warm.begin(), warm.end());
  std::printf(
      "warm probe (worker thread + all devices + process lists), %d runs: min %.3f ms, median %.3f ms, max %.3f ms\n",
      repeat, warm.front(), warm[warm.size() / 2], warm.back());
  auto start = steady_clock::now();
  auto s = probe.sample({}, start + settle_max, true);
  if (!s) {
    std::printf("settle: first sample failed: %s\n", s.error().what());
    return 1;
  }
  auto out = settle_wait(HostPaths::system(), probe, {}, std::move(*s), start, settle_max);
  std::printf("forced settle on idle GPUs (bound %lld ms): %s after %lld ms, %d samples%s%s\n",
              static_cast<long long>(settle_max.count()), out.settled ? "settled" : "NOT settled",
              static_cast<long long>(out.elapsed.count()), out.samples, out.note.empty() ? "" : ": ", out.note.c_str());
  if (kill_gib > 0) return kill_test(gpu, kill_gib, settle_max, kills);
  return 0;
}
