// probe_overhead: what the memory probes cost a page-allocation-heavy workload, side by side in
// one run: no probes; the always-on set (mm_probes); deep mode alone (mm_deep: kmem:mm_page_alloc
// + sched:sched_switch); deep mode as the agent runs it (always-on + deep); the equivalent bpftrace
// one-liner (order histogram + per-task counts on kmem:mm_page_alloc).
//
// Workloads, all on CPU 1: "order0" allocates one 4 KiB page per fallocate() call on a memfd, then
// punches the whole file out; "thp" faults 2 MiB transparent huge pages (order 9) in a
// MADV_HUGEPAGE region, then drops them; "switch" ping-pongs two threads through eventfds (two
// context switches per round trip, no page allocation): what deep mode's sched_switch program costs.
//
// Method: every pass runs every mode once, in an order rotated per pass (so drift and position
// do not favour a mode); each mode's figure is paired with the same pass's "none". Reported: the
// median of the paired differences over passes and a distribution-free 95% confidence interval of
// that median (order statistics, binomial), so a figure and its noise are read together.
//
// --prog-stats adds a second phase with BPF_ENABLE_STATS on: the kernel's own run count and run
// time of each mode's programs during the same workloads, as a share of the workload's time (the
// in-program cost; the tracepoint dispatch around it is not counted there, and the stats clock
// reads are). It is a separate phase because the stats themselves cost two clock reads per run.
//
// bpftrace 0.17 needs tracefs for tracepoints: when it is not mounted, this benchmark mounts it
// at its usual place inside a private mount namespace (seen by this process and bpftrace only).
//
// A fourth workload, "reclaim" (ReclaimWorkload below), makes memcg reclaim run all the time, so
// that the always-on probes fire at all (on the other three they do not).
//
// --toggles T (default 200) adds a fine-grained, interleaved A/B of the always-on set, of an empty tp_btf program
// on kmem:mm_page_alloc (the kernel's dispatch cost alone: the floor for any program there) and of
// deep mode: programs loaded once, links attached and detached around 16 MiB order0 runs in ABBA
// order, T pairs.
//
// Usage: probe_overhead [--passes N] [--mib M] [--switches K] [--toggles T] [--no-bpftrace] [--prog-stats]
#include <bpf/bpf.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_floor.skel.h"
#include "core/fs.h"
#include "core/host_paths.h"
#include "core/memory_cgroup.h"
#include "telemetry/bpf_skeleton.h"
#include "telemetry/deep_probe.h"
#include "telemetry/mm_probes.h"
#include "telemetry/vmstat.h"

using spark::telemetry::BpfSkeleton, spark::telemetry::DeepProbe, spark::telemetry::MmProbes,
    spark::telemetry::VmStatDelta, spark::telemetry::read_vmstat, spark::telemetry::vmstat_delta;

extern char** environ;
using namespace spark;
using clk = std::chrono::steady_clock;
using BenchFloorSkeleton = BpfSkeleton<bench_floor, bench_floor__open, bench_floor__load, bench_floor__destroy>;

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Median with a distribution-free ~95% confidence interval: the order statistics at
// n/2 -+ 0.98 sqrt(n) (normal approximation of Binomial(n, 1/2)).
struct Estimate {
  double median = 0, lo = 0, hi = 0;
  size_t n = 0;
};
Estimate estimate(std::vector<double> v) {
  Estimate e;
  e.n = v.size();
  if (v.empty()) return e;
  std::sort(v.begin(), v.end());
  e.median = median(v);
  double half = 0.98 * std::sqrt(static_cast<double>(v.size()));
  auto at = [&](double rank) {
    long i = std::lround(rank);
    i = std::clamp<long>(i, 1, static_cast<long>(v.size()));
    return v[static_cast<size_t>(i - 1)];
  };
  e.lo = at(v.size() / 2.0 - half);
  e.hi = at(v.size() / 2.0 + 1 + half);
  return e;
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

// ns per context switch: two threads on this CPU hand a token back and forth through eventfds.
double run_switch(int rounds, int reps) {
  std::vector<double> per;
  for (int r = 0; r < reps; ++r) {
    int a = ::eventfd(0, 0), b = ::eventfd(0, 0);
    uint64_t one = 1, got = 0;
    std::thread peer([&] {
      uint64_t v = 0, o = 1;
      for (int i = 0; i < rounds; ++i) {
        if (::read(a, &v, sizeof v) != sizeof v) break;
        if (::write(b, &o, sizeof o) != sizeof o) break;
      }
    });
    auto t0 = clk::now();
    for (int i = 0; i < rounds; ++i) {
      if (::write(a, &one, sizeof one) != sizeof one) break;
      if (::read(b, &got, sizeof got) != sizeof got) break;
    }
    auto t1 = clk::now();
    peer.join();
    ::close(a);
    ::close(b);
    per.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / (2.0 * rounds));
  }
  return median(per);
}

// "reclaim": a child process in a memory cgroup of our own (cgroup v1, under this process's memory
// cgroup, 16 MiB limit) reads a 64 MiB file over and over, so every page it reads is allocated
// and charged, and memcg reclaim runs all the time: the workload on which the always-on probes
// (mm_vmscan_memcg_reclaim_begin/end) actually fire. ns per 4 KiB page read.
class ReclaimWorkload {
 public:
  ReclaimWorkload(const HostPaths& paths, const std::string& file_dir) {
    std::string own;
    if (auto h = find_memory_hierarchy(paths); h.ok() && h->version == CgroupVersion::v1)
      own = memory_cgroup_of(paths, *h, 0).value_or("");
    if (own.empty()) {
      why_ = "no cgroup v1 memory controller";
      return;
    }
    dir_ =
        paths.cgroup / "memory" / (own == "/" ? "" : own.substr(1)) / ("probe-overhead-" + std::to_string(::getpid()));
    std::error_code ec;
    if (!std::filesystem::create_directory(dir_, ec)) {
      why_ = "cannot create " + dir_.string() + ": " + ec.message();
      dir_.clear();
      return;
    }
    if (!write_value(dir_ / "memory.limit_in_bytes", std::to_string(16 << 20)).ok()) {
      why_ = "cannot set the memory limit";
      return;
    }
    file_ = std::filesystem::path(file_dir) / ("probe-overhead-" + std::to_string(::getpid()));
    int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::string mib(1 << 20, 'x');
    for (int i = 0; i < 64 && fd >= 0; ++i)
      if (::write(fd, mib.data(), mib.size()) != static_cast<ssize_t>(mib.size())) break;
    if (fd >= 0) {
      ::fdatasync(fd);
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      ::close(fd);
    }
    ok_ = fd >= 0;
  }
  ~ReclaimWorkload() {
    std::error_code ec;
    if (!file_.empty()) std::filesystem::remove(file_, ec);
    for (int i = 0; !dir_.empty() && i < 50 && ::rmdir(dir_.c_str()) != 0 && errno == EBUSY; ++i) ::usleep(20000);
  }
  bool ok() const { return ok_; }
  const std::string& why() const { return why_; }
  // ns per page read, over `passes` reads of the file, in a child inside the cgroup.
  double run(int passes) {
    int res[2];
    if (::pipe(res) != 0) return 0;
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(res[0]);
      if (!write_value(dir_ / "cgroup.procs", std::to_string(::getpid())).ok()) ::_exit(1);
      std::vector<char> buf(1 << 16);
      auto read_all = [&] {
        int fd = ::open(file_.c_str(), O_RDONLY);
        if (fd < 0) ::_exit(2);
        while (::read(fd, buf.data(), buf.size()) > 0) {
        }
        ::close(fd);
      };
      read_all();  // charged to the cgroup from here on
      auto t0 = clk::now();
      for (int i = 0; i < passes; ++i) read_all();
      double ns = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / (passes * (64.0 * 256));
      (void)!::write(res[1], &ns, sizeof ns);
      ::_exit(0);
    }
    ::close(res[1]);
    double ns = 0;
    if (::read(res[0], &ns, sizeof ns) != sizeof ns) ns = 0;
    ::close(res[0]);
    ::waitpid(pid, nullptr, 0);
    return ns;
  }

 private:
  std::filesystem::path dir_, file_;
  std::string why_;
  bool ok_ = false;
};

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
    // Off the measured CPU: bpftrace's own user-space work is not what is measured.
    if (pid_ > 0) {
      cpu_set_t other;
      CPU_ZERO(&other);
      CPU_SET(0, &other);
      ::sched_setaffinity(pid_, sizeof other, &other);
    }
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

// Kernel-measured run count and run time (BPF_ENABLE_STATS: bpf_prog_info run_cnt/run_time_ns)
// of a set of programs, by id or by name prefix. Dispatch outside the programs is not included.
struct ProgStats {
  uint64_t run_ns = 0, runs = 0;
  ProgStats minus(const ProgStats& o) const { return {run_ns - o.run_ns, runs - o.runs}; }
};
ProgStats prog_stats(const std::function<bool(uint32_t id, const std::string& name)>& want) {
  ProgStats s;
  uint32_t id = 0;
  while (bpf_prog_get_next_id(id, &id) == 0) {
    int fd = bpf_prog_get_fd_by_id(id);
    if (fd < 0) continue;
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && want(info.id, info.name)) {
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

// What one mode attaches, for as long as it lives.
struct Attached {
  std::optional<MmProbes> probes;
  std::optional<DeepProbe> deep;
  std::optional<Bpftrace> bt;
  std::vector<uint32_t> ids;  // our programs (always-on and/or deep)
};

Result<void> attach(const std::string& m, Attached& a) {
  HostPaths paths = HostPaths::system();
  if (m == "always_on" || m == "deep") {
    SPARK_TRY(MmProbes p, MmProbes::start(paths, {}));
    a.probes.emplace(std::move(p));
    auto ids = a.probes->program_ids();
    a.ids.insert(a.ids.end(), ids.begin(), ids.end());
  }
  if (m == "deep" || m == "deep_only") {
    SPARK_TRY(DeepProbe d, DeepProbe::start(paths, {}));
    a.deep.emplace(std::move(d));
    auto ids = a.deep->program_ids();
    a.ids.insert(a.ids.end(), ids.begin(), ids.end());
  }
  if (m == "bpftrace") {
    a.bt.emplace();
    if (!a.bt->ok()) return sys_error(EIO, "bpftrace did not attach");
  }
  return {};
}

void print_row(const char* what, const char* unit, const std::string& mode, double base, const Estimate& d) {
  std::printf("  %-8s %-10s %+9.1f %s  [%+.1f, %+.1f]  = %+6.2f%% [%+.2f%%, %+.2f%%]  (n=%zu)\n", what, mode.c_str(),
              d.median, unit, d.lo, d.hi, d.median / base * 100, d.lo / base * 100, d.hi / base * 100, d.n);
}

}  // namespace

int main(int argc, char** argv) {
  int passes = 5;
  size_t mib = 64;
  int switches = 100000;
  bool with_bpftrace = true;
  bool prog_stats_on = false;
  int toggles = 200;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--passes" && i + 1 < argc)
      passes = std::atoi(argv[++i]);
    else if (a == "--mib" && i + 1 < argc)
      mib = std::strtoul(argv[++i], nullptr, 10);
    else if (a == "--switches" && i + 1 < argc)
      switches = std::atoi(argv[++i]);
    else if (a == "--toggles" && i + 1 < argc)
      toggles = std::atoi(argv[++i]);
    else if (a == "--no-bpftrace")
      with_bpftrace = false;
    else if (a == "--prog-stats")
      prog_stats_on = true;
    else {
      std::fprintf(
          stderr,
          "usage: probe_overhead [--passes N] [--mib M] [--switches K] [--toggles T] [--no-bpftrace] [--prog-stats]\n");
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

  std::vector<std::string> modes{"none", "always_on", "deep_only", "deep"};
  if (with_bpftrace) modes.push_back("bpftrace");
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
  run_switch(switches / 10, 1);
  ReclaimWorkload reclaim(paths, "/var/tmp");
  if (!reclaim.ok()) std::fprintf(stderr, "reclaim workload off: %s\n", reclaim.why().c_str());
  struct Pass {
    double order0 = 0, thp = 0, sw = 0, rc = 0;
  };
  std::map<std::string, std::vector<Pass>> raw_by_mode;
  std::map<std::string, std::vector<double>> d_order0, d_thp, d_switch, d_reclaim;
  for (int pass = 0; pass < passes; ++pass) {
    std::map<std::string, Pass> this_pass;
    for (size_t k = 0; k < modes.size(); ++k) {
      const std::string& m = modes[(k + static_cast<size_t>(pass)) % modes.size()];
      Attached att;
      if (auto r = attach(m, att); !r.ok()) {
        std::fprintf(stderr, "%s: %s\n", m.c_str(), r.error().what());
        if (m == "bpftrace") continue;
        return 1;
      }
      Pass p;
      p.order0 = run_order0(fd, bytes, 3);
      p.thp = run_thp(region, thp_bytes, 3);
      p.sw = run_switch(switches, 1);
      if (reclaim.ok()) p.rc = reclaim.run(2);
      if (att.deep && m == "deep_only" && events_per_op == 0) {
        att.deep->stop();
        auto r = att.deep->read(50);
        if (r.ok())
          for (const auto& t : r->top)
            if (t.tgid == static_cast<uint32_t>(::getpid()))
              events_per_op = static_cast<double>(t.calls) / (3.0 * (bytes / 4096) + 3.0 * (thp_bytes >> 21));
      }
      this_pass[m] = p;
      raw_by_mode[m].push_back(p);
    }
    if (!this_pass.count("none")) continue;
    const Pass& n = this_pass["none"];
    for (const auto& [m, v] : this_pass) {
      if (m == "none") continue;
      d_order0[m].push_back(v.order0 - n.order0);
      d_thp[m].push_back(v.thp - n.thp);
      d_switch[m].push_back(v.sw - n.sw);
      if (reclaim.ok()) d_reclaim[m].push_back(v.rc - n.rc);
    }
  }
  auto v1 = read_vmstat(paths);
  VmStatDelta vd = vmstat_delta(*v0, *v1, 1);
  std::printf(
      "probe_overhead: %d passes, order0 %zu MiB/rep (%zu allocs), thp %zu MiB/rep, switch %d round trips; "
      "thp_fault_alloc %lu, thp_fault_fallback %lu\n",
      passes, mib, bytes / 4096, thp_bytes >> 20, switches, vd.get("thp_fault_alloc"), vd.get("thp_fault_fallback"));
  auto med = [&](const std::string& m, double Pass::*f) {
    std::vector<double> v;
    for (const auto& p : raw_by_mode[m]) v.push_back(p.*f);
    return median(v);
  };
  std::printf("medians:  %-10s %12s %14s %12s %14s\n", "mode", "order0 ns/op", "thp ns/fault", "ns/switch",
              "reclaim ns/pg");
  for (const auto& m : modes)
    if (raw_by_mode.count(m))
      std::printf("          %-10s %12.1f %14.1f %12.1f %14.1f\n", m.c_str(), med(m, &Pass::order0), med(m, &Pass::thp),
                  med(m, &Pass::sw), med(m, &Pass::rc));
  std::printf("paired against the same pass's none: median difference [95%% CI of the median]\n");
  double base0 = med("none", &Pass::order0), base_thp = med("none", &Pass::thp), base_sw = med("none", &Pass::sw);
  for (const auto& m : modes) {
    if (m == "none" || !d_order0.count(m)) continue;
    print_row("order0", "ns/op", m, base0, estimate(d_order0[m]));
    print_row("thp", "ns/fault", m, base_thp, estimate(d_thp[m]));
    print_row("switch", "ns/sw", m, base_sw, estimate(d_switch[m]));
    if (d_reclaim.count(m)) print_row("reclaim", "ns/page", m, med("none", &Pass::rc), estimate(d_reclaim[m]));
  }
  if (events_per_op > 0) {
    std::printf("mm_page_alloc events per order0 op (counted by deep mode): %.3f\n", events_per_op);
    auto per_event = [&](const std::string& m) {
      std::vector<double> v;
      for (double d : d_order0[m]) v.push_back(d / events_per_op);
      return estimate(v);
    };
    Estimate dd = per_event("deep_only");
    std::printf("per mm_page_alloc event: deep mode %.1f ns [%.1f, %.1f]", dd.median, dd.lo, dd.hi);
    if (d_order0.count("bpftrace")) {
      Estimate bt = per_event("bpftrace");
      std::printf(", bpftrace %.1f ns [%.1f, %.1f] -> bpftrace/deep %.1fx (CI bounds: %.1fx .. %.1fx)", bt.median,
                  bt.lo, bt.hi, bt.median / dd.median, dd.hi > 0 ? bt.lo / dd.hi : 0.0,
                  dd.lo > 0 ? bt.hi / dd.lo : 0.0);
      // Per pass: the ratio of the two paired differences.
      std::vector<double> ratios;
      for (size_t i = 0; i < std::min(d_order0["bpftrace"].size(), d_order0["deep_only"].size()); ++i)
        if (d_order0["deep_only"][i] > 0) ratios.push_back(d_order0["bpftrace"][i] / d_order0["deep_only"][i]);
      Estimate r = estimate(ratios);
      std::printf("\n  per-pass ratio bpftrace/deep: median %.1fx [%.1fx, %.1fx] (n=%zu)", r.median, r.lo, r.hi, r.n);
    }
    std::printf("\n");
  }

  // Fine-grained A/B: the programs stay loaded and only their links come and go, so "off" and "on"
  // alternate every few milliseconds (ABBA order) and slow drift of the host cancels out.
  if (toggles > 0) {
    size_t chunk = std::min<size_t>(bytes, 16 << 20);
    std::printf(
        "toggled A/B: %d rounds; per round, each subject (order rotated) gets one ABBA-ordered pair of\n"
        "  %zu-MiB order0 runs, programs loaded once, only their links attached/detached\n",
        toggles, chunk >> 20);
    struct Subject {
      const char* name;
      std::function<void(bool)> set;
      std::vector<double> diffs;
    };
    std::vector<Subject> subjects;
    std::optional<MmProbes> probes;
    if (auto p = MmProbes::start(paths, {}); p.ok()) {
      probes.emplace(std::move(p).value());
      probes->detach();
      subjects.push_back({"always_on", [&](bool on) {
                            if (on)
                              (void)probes->attach();
                            else
                              probes->detach();
                          }});
    }
    // The dispatch floor: an empty tp_btf program on the same tracepoint.
    std::optional<BenchFloorSkeleton> fl;
    if (auto loaded = BenchFloorSkeleton::try_load("bench_floor")) fl.emplace(std::move(loaded).value());
    bpf_link* floor_link = nullptr;
    if (fl)
      subjects.push_back({"empty_prog", [&](bool on) {
                            if (on && !floor_link) floor_link = bpf_program__attach((*fl)->progs.floor_btf);
                            if (!on && floor_link) {
                              bpf_link__destroy(floor_link);
                              floor_link = nullptr;
                            }
                          }});
    std::optional<DeepProbe> deep;
    if (auto d = DeepProbe::start(paths, {}); d.ok()) {
      deep.emplace(std::move(d).value());
      deep->stop();
      subjects.push_back({"deep_only", [&](bool on) {
                            if (on)
                              (void)deep->resume();
                            else
                              deep->stop();
                          }});
    }
    run_order0(fd, chunk, 1);
    for (int i = 0; i < toggles; ++i)
      for (size_t k = 0; k < subjects.size(); ++k) {
        Subject& sj = subjects[(k + static_cast<size_t>(i)) % subjects.size()];
        bool on_first = (i % 4 == 1 || i % 4 == 2);
        // Attaching and detaching leave deferred work behind (RCU callbacks, link release on a
        // workqueue): let it run before a timed run, so it is not charged to either side.
        auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(10)); };
        sj.set(on_first);
        settle();
        double a = run_order0(fd, chunk, 1);
        sj.set(!on_first);
        settle();
        double b = run_order0(fd, chunk, 1);
        sj.set(false);
        sj.diffs.push_back(on_first ? a - b : b - a);
      }
    std::optional<Estimate> deep_e;
    for (auto& sj : subjects) {
      Estimate e = estimate(sj.diffs);
      std::printf("  order0   %-10s %+7.1f ns/op [%+.1f, %+.1f] = %+.2f%% [%+.2f%%, %+.2f%%] of %.1f ns/op (n=%zu)",
                  sj.name, e.median, e.lo, e.hi, e.median / base0 * 100, e.lo / base0 * 100, e.hi / base0 * 100, base0,
                  e.n);
      if (events_per_op > 0)
        std::printf("; per event %.1f ns [%.1f, %.1f]", e.median / events_per_op, e.lo / events_per_op,
                    e.hi / events_per_op);
      std::printf("\n");
      if (std::string(sj.name) == "deep_only") deep_e = e;
    }
    if (deep_e && events_per_op > 0 && d_order0.count("bpftrace")) {
      Estimate bt = estimate(d_order0["bpftrace"]);
      const Estimate& e = *deep_e;
      std::printf(
          "  bpftrace/deep per event (bpftrace from the passes above, deep toggled): %.1fx (CI bounds %.1fx .. "
          "%.1fx)\n",
          bt.median / e.median, e.hi > 0 ? bt.lo / e.hi : 0.0, e.lo > 0 ? bt.hi / e.lo : 0.0);
    }
    deep.reset();
    fl.reset();
  }

  if (prog_stats_on) {
    if (bpf_enable_stats(BPF_STATS_RUN_TIME) < 0) {
      std::fprintf(stderr, "BPF run-time stats unavailable\n");
      return 0;
    }
    std::printf("kernel accounting (BPF_ENABLE_STATS), one attach per mode, same workloads:\n");
    for (const auto& m : modes) {
      if (m == "none") continue;
      Attached att;
      if (!attach(m, att).ok()) continue;
      auto ours = [&](uint32_t id, const std::string&) {
        return std::find(att.ids.begin(), att.ids.end(), id) != att.ids.end();
      };
      auto bpftrace_prog = [](uint32_t, const std::string& name) { return name.rfind("mm_page_alloc", 0) == 0; };
      std::function<bool(uint32_t, const std::string&)> want = ours;
      if (m == "bpftrace") want = bpftrace_prog;
      struct W {
        const char* name;
        std::function<double()> run;  // returns elapsed ns
      };
      W ws[] = {
          {"order0", [&] { return run_order0(fd, bytes, 1) * static_cast<double>(bytes / 4096); }},
          {"thp", [&] { return run_thp(region, thp_bytes, 1) * static_cast<double>(thp_bytes >> 21); }},
          {"switch", [&] { return run_switch(switches, 1) * 2.0 * switches; }},
          {"reclaim", [&] { return reclaim.ok() ? reclaim.run(2) * 2 * 64.0 * 256 : 0.0; }},
      };
      for (auto& w : ws) {
        auto s0 = prog_stats(want);
        double ns = w.run();
        if (ns <= 0) continue;
        auto s = prog_stats(want).minus(s0);
        std::printf("  %-10s %-7s runs %10lu  run time %12lu ns  = %7.1f ns/run  share of workload %.4f%%\n", m.c_str(),
                    w.name, s.runs, s.run_ns, s.runs ? static_cast<double>(s.run_ns) / s.runs : 0.0,
                    static_cast<double>(s.run_ns) / ns * 100);
      }
    }
  }
  return 0;
}
