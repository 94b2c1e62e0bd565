// probe_overhead: what the memory probes cost a page-allocation-heavy workload, side by side in
// one run: no probes; the always-on set (mm_probes); deep mode (always-on + kmem:mm_page_alloc);
// the equivalent bpftrace one-liner (order histogram + per-task counts on kmem:mm_page_alloc).
//
// Workloads: "order0" allocates one 4 KiB page per fallocate() call on a memfd, then punches the
// whole file out; "thp" faults 2 MiB transparent huge pages (order 9) in a MADV_HUGEPAGE region,
// then drops them. Modes are interleaved over several passes; each figure is the median.
//
// bpftrace 0.17 needs tracefs for tracepoints: when it is not mounted, this benchmark mounts it
// at its usual place inside a private mount namespace (seen by this process and bpftrace only).
//
// Usage: probe_overhead [--passes N] [--mib M] [--no-bpftrace] [--prog-stats]
// --prog-stats adds the kernel's own per-run time of each BPF program (BPF_ENABLE_STATS).
#include <bpf/bpf.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/host_paths.h"
#include "telemetry/mm_probes.h"
#include "telemetry/vmstat.h"

extern char** environ;
using namespace spark;
using clk = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// ns per 4 KiB page allocation.
double run_order0(int fd, size_t bytes, int reps) {
  std::vector<double> per;
  for (int r = 0; r < reps; ++r) {
    auto t0 = clk::now();
    for (size_t off = 0; off < bytes; off += 4096)
      if (::fallocate(fd, 0, static_cast<off_t>(off), 4096) != 0) std::perror("fallocate");
    ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(bytes));
    auto t1 = clk::now();
    per.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / (bytes / 4096));
  }
  return median(per);
}

// ns per 2 MiB huge-page fault.
double run_thp(char* region, size_t bytes, int reps) {
  std::vector<double> per;
  for (int r = 0; r < reps; ++r) {
    auto t0 = clk::now();
    for (size_t off = 0; off < bytes; off += 2 << 20) region[off] = 1;
    ::madvise(region, bytes, MADV_DONTNEED);
    auto t1 = clk::now();
    per.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / (bytes >> 21));
  }
  return median(per);
}

class Bpftrace {
 public:
  Bpftrace() {
    int out[2];
    if (::pipe(out) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    std::vector<std::string> args{
        "bpftrace", "-e",
        "tracepoint:kmem:mm_page_alloc { @orders[args->order] = count(); @tasks[pid, comm] = count(); }"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawnp(&pid_, "bpftrace", &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    // Wait for "Attaching N probes..." (poll: never block on a silent bpftrace).
    std::string text;
    char buf[256];
    auto deadline = clk::now() + std::chrono::seconds(20);
    pollfd p{out[0], POLLIN, 0};
    while (pid_ > 0 && clk::now() < deadline && text.find("Attaching") == std::string::npos) {
      if (::poll(&p, 1, 200) <= 0) continue;
      ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    out_ = out[0];
    ok_ = text.find("Attaching") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ~Bpftrace() {
    if (pid_ > 0) {
      ::kill(pid_, SIGINT);
      // Drain its map dump so it can exit; SIGKILL if it does not within 10 s.
      char buf[4096];
      pollfd p{out_, POLLIN, 0};
      auto deadline = clk::now() + std::chrono::seconds(10);
      int status = 0;
      while (::waitpid(pid_, &status, WNOHANG) == 0) {
        if (clk::now() > deadline) {
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, &status, 0);
          break;
        }
        if (::poll(&p, 1, 100) > 0 && ::read(out_, buf, sizeof buf) <= 0) p.events = 0;
      }
    }
    if (out_ >= 0) ::close(out_);
  }
  bool ok() const { return ok_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool ok_ = false;
};

// Kernel-measured run time of the BPF programs whose name starts with prefix (BPF_ENABLE_STATS:
// bpf_prog_info run_time_ns / run_cnt). Dispatch cost outside the program is not included.
struct ProgStats {
  uint64_t run_ns = 0, runs = 0;
};
ProgStats prog_stats(const std::string& prefix) {
  ProgStats s;
  uint32_t id = 0;
  while (bpf_prog_get_next_id(id, &id) == 0) {
    int fd = bpf_prog_get_fd_by_id(id);
    if (fd < 0) continue;
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && std::string(info.name).rfind(prefix, 0) == 0) {
      s.run_ns += info.run_time_ns;
      s.runs += info.run_cnt;
    }
    ::close(fd);
  }
  return s;
}

bool private_tracefs(std::string* why) {
  HostPaths paths = HostPaths::system();
  if (std::filesystem::exists(paths.tracefs / "events")) return true;
  if (::unshare(CLONE_NEWNS) != 0) {
    *why = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
    return false;
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    *why = std::string("making / private: ") + std::strerror(errno);
    return false;
  }
  if (::mount("tracefs", paths.tracefs.c_str(), "tracefs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    *why = std::string("mounting tracefs: ") + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int passes = 5;
  size_t mib = 64;
  bool with_bpftrace = true;
  bool prog_stats_on = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--passes" && i + 1 < argc)
      passes = std::atoi(argv[++i]);
    else if (a == "--mib" && i + 1 < argc)
      mib = std::strtoul(argv[++i], nullptr, 10);
    else if (a == "--no-bpftrace")
      with_bpftrace = false;
    else if (a == "--prog-stats")
      prog_stats_on = true;
    else {
      std::fprintf(stderr, "usage: probe_overhead [--passes N] [--mib M] [--no-bpftrace] [--prog-stats]\n");
      return 2;
    }
  }
  std::string why;
  if (with_bpftrace && !private_tracefs(&why)) {
    std::fprintf(stderr, "bpftrace peer off: %s\n", why.c_str());
    with_bpftrace = false;
  }
  HostPaths paths = HostPaths::system();
  size_t bytes = mib << 20;
  int fd = ::memfd_create("probe_overhead", 0);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    std::perror("memfd");
    return 1;
  }
  size_t thp_bytes = std::min<size_t>(bytes, 256 << 20);
  void* raw = ::mmap(nullptr, thp_bytes + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char* region =
      reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(raw) + (2 << 20) - 1) & ~((uintptr_t{2} << 20) - 1));
  ::madvise(region, thp_bytes, MADV_HUGEPAGE);

  const char* modes[] = {"none", "always_on", "deep", "bpftrace"};
  std::map<std::string, std::vector<double>> order0, thp, order0_over, thp_over, prog_ns, order0_delta;
  // Kernel run-time stats cost two clock reads per program run: only when asked (--prog-stats).
  if (prog_stats_on && bpf_enable_stats(BPF_STATS_RUN_TIME) < 0)
    std::fprintf(stderr, "BPF run-time stats unavailable\n");
  // One CPU, so the workload and the probes do not migrate between measurements.
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(1, &one);
  ::sched_setaffinity(0, sizeof one, &one);
  double events_per_op = 0;
  auto v0 = read_vmstat(paths);
  // Warm-up.
  run_order0(fd, bytes, 1);
  run_thp(region, thp_bytes, 1);
  for (int pass = 0; pass < passes; ++pass) {
    std::map<std::string, std::pair<double, double>> this_pass;
    for (const char* mode : modes) {
      std::string m = mode;
      if (m == "bpftrace" && !with_bpftrace) continue;
      std::optional<MmProbes> probes;
      std::optional<DeepProbe> deep;
      std::optional<Bpftrace> bt;
      if (m == "always_on" || m == "deep") {
        auto p = MmProbes::start(paths, {});
        if (!p.ok()) {
          std::fprintf(stderr, "probes: %s\n", p.error().what());
          return 1;
        }
        probes.emplace(std::move(p).value());
      }
      if (m == "deep") {
        auto d = DeepProbe::start(paths, {});
        if (!d.ok()) {
          std::fprintf(stderr, "deep: %s\n", d.error().what());
          return 1;
        }
        deep.emplace(std::move(d).value());
      }
      if (m == "bpftrace") {
        bt.emplace();
        if (!bt->ok()) {
          std::fprintf(stderr, "bpftrace did not attach\n");
          with_bpftrace = false;
          continue;
        }
      }
      double a = run_order0(fd, bytes, 3);
      double b = run_thp(region, thp_bytes, 3);
      if (m == "deep") {
        auto ps = prog_stats("page_alloc_");
        if (ps.runs) prog_ns["deep"].push_back(static_cast<double>(ps.run_ns) / ps.runs);
      }
      if (m == "bpftrace") {
        auto ps = prog_stats("mm_page_alloc");
        if (ps.runs) prog_ns["bpftrace"].push_back(static_cast<double>(ps.run_ns) / ps.runs);
      }
      if (deep && pass == 0) {
        deep->stop();
        auto r = deep->read(50);
        if (r.ok())
          for (const auto& t : r->top)
            if (t.tgid == static_cast<uint32_t>(::getpid()))
              events_per_op = static_cast<double>(t.calls) / (3.0 * (bytes / 4096) + 3.0 * (thp_bytes >> 21));
      }
      order0[m].push_back(a);
      thp[m].push_back(b);
      this_pass[m] = {a, b};
    }
    for (const auto& [m, v] : this_pass) {
      order0_over[m].push_back((v.first / this_pass["none"].first - 1) * 100);
      order0_delta[m].push_back(v.first - this_pass["none"].first);
      thp_over[m].push_back((v.second / this_pass["none"].second - 1) * 100);
    }
  }
  auto v1 = read_vmstat(paths);
  VmStatDelta vd = vmstat_delta(*v0, *v1, 1);
  std::printf(
      "probe_overhead: %d passes, order0 %zu MiB/rep (%zu allocs), thp %zu MiB/rep; thp_fault_alloc %lu, "
      "thp_fault_fallback %lu\n",
      passes, mib, bytes / 4096, thp_bytes >> 20, vd.get("thp_fault_alloc"), vd.get("thp_fault_fallback"));
  std::printf("%-10s %14s %12s %14s %12s\n", "mode", "order0 ns/op", "overhead", "thp ns/fault", "overhead");
  for (const char* mode : modes) {
    if (!order0.count(mode)) continue;
    std::printf("%-10s %14.1f %11.2f%% %14.1f %11.2f%%\n", mode, median(order0[mode]), median(order0_over[mode]),
                median(thp[mode]), median(thp_over[mode]));
  }
  if (events_per_op > 0 && order0.count("deep")) {
    // Paired per pass against the same pass's "none", then the median over passes.
    std::printf("mm_page_alloc events per order0 op: %.2f\n", events_per_op);
    double deep_cost = median(order0_delta["deep"]) / events_per_op;
    std::printf("per-event cost (order0, paired vs none): deep %.1f ns", deep_cost);
    if (order0_delta.count("bpftrace")) {
      double bt_cost = median(order0_delta["bpftrace"]) / events_per_op;
      std::printf(", bpftrace %.1f ns, bpftrace/deep %.1fx", bt_cost, deep_cost > 0 ? bt_cost / deep_cost : 0.0);
    }
    std::printf("\n");
  }
  for (const auto& [m, v] : prog_ns)
    std::printf("BPF program run time per mm_page_alloc event (kernel stats, excludes dispatch): %s %.1f ns\n",
                m.c_str(), median(v));
  return 0;
}
