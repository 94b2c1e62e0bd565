// bench/floor (issue 14 part 2): a loader that reads a model file and copies what it reads into
// anonymous memory (the host copy that a unified-memory GPU allocation is), run with a free floor
// it crosses, with spark-tune's floor and untuned.
//
// The host is never at risk: the loader runs in a memory cgroup child of our own (v1 here) with a
// limit, and the floor is held on that cgroup's figures (free = limit - usage; available = free +
// its file cache), injected as the keeper's meminfo (RAM here is lazily initialised: the host's
// MemFree says nothing). Every step acts for real (the file's cache evicted, drop_caches = 1,
// compact_memory, SIGSTOP/SIGCONT, SIGTERM/SIGKILL). Run under the kernel lock:
//
//   flock /tmp/spark-tune-kernel.lock build/bench/floor [--runs 20] [--limit-mib 1024] [--file-mib 1536]
//       [--modes loop,watch,paced] [--scenarios cache,grow]
// (never under `timeout`: a killed bench leaves its memory cgroup child behind.)
//
// Scenarios, each run --runs times with the floor and once untuned:
//   cache: the loader keeps a 50% of the limit working set of copies (it hands the rest to the
//          "GPU" and frees it): the page cache of the file is what drives free memory under the
//          floor; step 1 (evict) is expected to restore it.
//   grow:  the loader keeps every copy, 120% of the limit: nothing but stopping it can hold the
//          floor; untuned, the kernel's OOM killer ends it.
// Modes (how the keeper is driven): loop = as before the watch thread (the owner's loop ticks it
// every 10 ms); watch = its own thread (timerfd, PSI, reclaim tracepoints), 10 ms; paced = the
// thread and checks sooner as memory falls towards the floor (the agent's default).
// Figures: crossing -> first action begun and done (p50/p99; the crossing dated by a 200 us
// real-time sampler of the cgroup's usage: its last reading above the floor), detection (the
// crossing -> the keeper's reading below it), the step itself, steps taken, lowest free vs the
// floor, how the loader ended (exit, SIGTERM by the floor, SIGKILL by the OOM killer), the cgroup's
// OOM kills, checks and wake-ups by source.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "../tests/integration/memcg_child.h"
#include "core/fs.h"
#include "core/units.h"
#include "tune/actuator.h"
#include "tune/page_cache.h"
#include "tune/tuner.h"
#include "window/floor.h"

using spark::tune::HostActuator, spark::tune::Tuner, spark::tune::evict_file;

using spark::window::FloorKeeper, spark::window::FloorSpec, spark::window::FloorStats;

using namespace spark;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t k_mib = 1ull << 20;

uint64_t read_u64(const fs::path& p) {
  auto t = read_file(p);
  if (!t) return 0;
  try {
    return std::stoull(trim(*t));
  } catch (...) {
    return 0;
  }
}

uint64_t oom_kills(const fs::path& dir) {
  auto t = read_file(dir / "memory.oom_control");
  if (!t) return 0;
  for (const auto& line : split_lines(*t))
    if (line.rfind("oom_kill ", 0) == 0) return std::stoull(line.substr(9));
  return 0;
}

// The loader: reads the file in 4 MiB chunks, copies each into a fresh anonymous block, keeps at
// most `keep` bytes of blocks (the oldest handed on and freed), exits 0 at the end of the file.
void loader(const std::string& file, uint64_t keep) {
  int fd = ::open(file.c_str(), O_RDONLY);
  if (fd < 0) ::_exit(3);
  const size_t chunk = 4 * k_mib;
  std::vector<char> buf(chunk);
  std::vector<void*> blocks;
  size_t first = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), chunk);
    if (n <= 0) break;
    void* b = ::mmap(nullptr, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) ::_exit(4);
    std::memcpy(b, buf.data(), static_cast<size_t>(n));
    blocks.push_back(b);
    while ((blocks.size() - first) * chunk > keep) ::munmap(blocks[first++], chunk);
  }
  ::_exit(0);
}

struct RunResult {
  std::vector<int64_t> first_action_us;  // per crossing: the sampler's crossing -> first step done
  std::vector<int64_t> first_begun_us;   // per crossing: the sampler's crossing -> first step begun
  std::vector<int64_t> detect_us;        // the sampler's crossing -> the keeper's reading below the floor
  std::vector<int64_t> took_us;          // the first step itself
  std::vector<int64_t> sample_gap_us;    // the sampler's resolution
  int max_step = 0;
  uint64_t lowest_free = UINT64_MAX;
  std::string end;  // exit 0, SIGTERM, SIGKILL ...
  uint64_t oom = 0;
  double seconds = 0;
  std::vector<int> steps;
  std::map<int, std::vector<int64_t>> step_us;  // how long each step took, by step
  uint64_t checks = 0, wakes_timer = 0, wakes_psi = 0, wakes_reclaim = 0;
  std::string sources;
  bool sampler_rt = false;
};

std::string describe_end(int st) {
  if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st))
    return WTERMSIG(st) == SIGKILL   ? "SIGKILL"
           : WTERMSIG(st) == SIGTERM ? "SIGTERM"
                                     : "signal " + std::to_string(WTERMSIG(st));
  return "?";
}

// How the keeper is driven:
//   loop:  as before this change: the owner's loop (here the main thread) calls tick() at
//          next_check(), every 10 ms, no pacing;
//   watch: the keeper's own watch thread (timerfd + PSI + reclaim tracepoints), no pacing;
//   paced: the watch thread, and checks sooner as free memory falls towards the floor (the agent's
//          default since this change).
enum class Mode { untuned, loop, watch, paced };
const char* mode_name(Mode m) {
  switch (m) {
    case Mode::untuned:
      return "untuned";
    case Mode::loop:
      return "loop";
    case Mode::watch:
      return "watch";
    case Mode::paced:
      return "paced";
  }
  return "?";
}

RunResult run_once(const HostPaths& paths, Tuner& tuner, const std::string& file, uint64_t limit, uint64_t keep,
                   uint64_t floor, Mode mode, int n) {
  RunResult res;
  (void)evict_file(file);
  test::MemcgChild cg(paths, "spark-floor-bench-" + std::to_string(::getpid()) + "-" + std::to_string(n), limit);
  if (!cg.ok()) {
    std::fprintf(stderr, "memory cgroup: %s\n", cg.why().c_str());
    std::exit(2);
  }
  fs::path dir = cg.dir();
  auto free_of = [&] {
    uint64_t used = read_u64(dir / "memory.usage_in_bytes");
    return used >= limit ? 0 : limit - used;
  };
  // The sampler (a 200 us loop at a real-time priority above the keeper's): when free memory really
  // went under the floor, independent of the keeper. A crossing is dated at the sampler's last
  // reading above the floor before the keeper's reading below it (so the figures are upper bounds:
  // late by at most one sampler gap, whose p99 is printed).
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<Clock::time_point, bool>> samples;  // (when, below the floor)
  std::thread sampler([&] {
    sched_param sp{};
    sp.sched_priority = 2;
    res.sampler_rt = ::pthread_setschedparam(::pthread_self(), SCHED_FIFO, &sp) == 0;
    Clock::time_point last{};
    while (!stop) {
      uint64_t f = free_of();
      auto now = Clock::now();
      {
        std::lock_guard<std::mutex> l(mu);
        if (last != Clock::time_point{})
          res.sample_gap_us.push_back(std::chrono::duration_cast<std::chrono::microseconds>(now - last).count());
        last = now;
        samples.push_back({now, f < floor});
        res.lowest_free = std::min(res.lowest_free, f);
      }
      std::this_thread::sleep_for(200us);
    }
  });
  auto start = Clock::now();
  pid_t pid = cg.spawn("floor-loader", [&] { loader(file, keep); });
  std::unique_ptr<FloorKeeper> keeper;
  if (mode != Mode::untuned) {
    FloorSpec s;
    s.free_bytes = floor;
    s.hysteresis = floor / 4;
    s.grace = 100ms;
    s.max_pause = 1000ms;
    s.kill_grace = 1000ms;
    if (mode != Mode::paced) s.fast_period = s.period;
    keeper =
        std::make_unique<FloorKeeper>(paths, tuner, "bench", std::vector<fs::path>{file}, pid, s, [&](const Event& e) {
          if (e.type != "floor_action") return;
          int step = e.data.value("step", 0);
          res.max_step = std::max(res.max_step, step);
          res.steps.push_back(step);
          res.step_us[step].push_back(e.data.value("took_us", int64_t{0}));
        });
    // The free floor only: one read of memory.usage_in_bytes per check (memory.stat costs more).
    keeper->set_meminfo_source([&]() -> Result<MemInfo> { return MemInfo::of(limit, limit, free_of()); });
    if (mode != Mode::loop)
      if (auto w = keeper->start_watch(); !w) {
        std::fprintf(stderr, "floor watch: %s\n", describe(w.error()).c_str());
        std::exit(2);
      }
  }
  int st = 0;
  for (;;) {
    if (mode == Mode::loop && Clock::now() >= keeper->next_check()) keeper->tick(Clock::now());
    if (keeper && keeper->watching()) keeper->on_psi(Clock::now());  // hands the queued events over
    pid_t w = ::waitpid(pid, &st, WNOHANG);
    if (w == pid) break;
    auto next = mode == Mode::loop ? keeper->next_check() : Clock::now() + 10ms;
    std::this_thread::sleep_until(std::min(next, Clock::now() + 10ms));
  }
  res.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  FloorStats stats;
  if (keeper) {
    auto fj = keeper->finish();
    res.sources = fj.value("watch", json::object()).dump();
    stats = keeper->stats();
  }
  stop = true;
  sampler.join();
  res.end = describe_end(st);
  res.oom = oom_kills(dir);
  res.checks = stats.checks;
  res.wakes_timer = stats.wakes_timer;
  res.wakes_psi = stats.wakes_psi;
  res.wakes_reclaim = stats.wakes_reclaim;
  auto us = [](Clock::duration d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); };
  for (const auto& t : stats.times) {
    // The sampler's last reading above the floor before the keeper's reading below it.
    Clock::time_point c = t.seen;
    auto it = std::upper_bound(samples.begin(), samples.end(), t.seen,
                               [](Clock::time_point x, const auto& smp) { return x < smp.first; });
    while (it != samples.begin()) {
      --it;
      if (!it->second) {
        c = it->first;
        break;
      }
    }
    res.first_action_us.push_back(us(t.done - c));
    res.first_begun_us.push_back(us(t.begun - c));
    res.detect_us.push_back(us(t.seen - c));
    res.took_us.push_back(us(t.done - t.begun));
  }
  (void)cg.wait();
  return res;
}

double pct(std::vector<int64_t> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return static_cast<double>(v[i]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 10;
  uint64_t limit_mib = 1024, file_mib = 1536;
  std::vector<Mode> modes = {Mode::loop, Mode::paced};
  std::string only;  // --scenarios cache|grow (default both)
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--runs") runs = std::atoi(argv[i + 1]);
    if (a == "--limit-mib") limit_mib = std::stoull(argv[i + 1]);
    if (a == "--file-mib") file_mib = std::stoull(argv[i + 1]);
    if (a == "--scenarios") only = argv[i + 1];
    if (a == "--modes") {
      modes.clear();
      std::string list = std::string(argv[i + 1]) + ",";
      for (size_t at = 0, comma; (comma = list.find(',', at)) != std::string::npos; at = comma + 1)
        for (Mode x : {Mode::loop, Mode::watch, Mode::paced})
          if (list.compare(at, comma - at, mode_name(x)) == 0) modes.push_back(x);
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bench/floor needs root (a memory cgroup, drop_caches, compact_memory)\n");
    return 2;
  }
  HostPaths paths = HostPaths::system();
  char tmpl[] = "/var/tmp/spark-floor-bench-XXXXXX";
  if (!::mkdtemp(tmpl)) return 2;
  fs::path dir = tmpl;
  paths.state = dir / "state";
  paths.run = dir / "run";
  HostActuator act(paths);
  Tuner tuner(paths, act);
  std::string file = (dir / "model.bin").string();
  {
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<char> buf(4 * k_mib);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 131);
    for (uint64_t w = 0; w < file_mib * k_mib; w += buf.size())
      if (::write(fd, buf.data(), buf.size()) < 0) return 2;
    ::fsync(fd);
    ::close(fd);
  }
  const uint64_t limit = limit_mib * k_mib, floor = limit / 5;
  std::printf("bench/floor: memcg limit %s, free floor %s (20%%), file %s, %d runs per scenario and mode\n",
              format_size(limit).c_str(), format_size(floor).c_str(), format_size(file_mib * k_mib).c_str(), runs);
  struct Scenario {
    const char* name;
    uint64_t keep;
  } scenarios[] = {{"cache", limit / 2}, {"grow", limit / 5 * 6}};
  int n = 0;
  for (const auto& sc : scenarios) {
    if (!only.empty() && only.find(sc.name) == std::string::npos) continue;
    for (Mode mode : modes) {
      std::vector<int64_t> lat, begun, det, took, gaps;
      uint64_t lowest = UINT64_MAX, oom = 0, checks = 0, wt = 0, wp = 0, wr = 0;
      std::map<std::string, int> ends;
      std::map<int, int> steps;
      std::map<int, std::vector<int64_t>> step_us;
      std::string sources;
      bool sampler_rt = true;
      double secs = 0;
      for (int r = 0; r < runs; ++r) {
        auto res = run_once(paths, tuner, file, limit, sc.keep, floor, mode, n++);
        lat.insert(lat.end(), res.first_action_us.begin(), res.first_action_us.end());
        begun.insert(begun.end(), res.first_begun_us.begin(), res.first_begun_us.end());
        det.insert(det.end(), res.detect_us.begin(), res.detect_us.end());
        took.insert(took.end(), res.took_us.begin(), res.took_us.end());
        gaps.insert(gaps.end(), res.sample_gap_us.begin(), res.sample_gap_us.end());
        lowest = std::min(lowest, res.lowest_free);
        oom += res.oom;
        ends[res.end]++;
        for (int s : res.steps) steps[s]++;
        for (auto& [k, v] : res.step_us) step_us[k].insert(step_us[k].end(), v.begin(), v.end());
        secs += res.seconds;
        checks += res.checks;
        wt += res.wakes_timer;
        wp += res.wakes_psi;
        wr += res.wakes_reclaim;
        sources = res.sources;
        sampler_rt = sampler_rt && res.sampler_rt;
      }
      std::printf(
          "%-5s %-5s: crossings %zu; crossing->first action begun p50 %.2f p99 %.2f max %.2f ms; "
          "->done p50 %.2f p99 %.2f max %.2f ms (detection p50 %.2f p99 %.2f; the step itself p50 %.2f "
          "p99 %.2f); steps",
          sc.name, mode_name(mode), lat.size(), pct(begun, 0.5), pct(begun, 0.99), pct(begun, 1.0), pct(lat, 0.5),
          pct(lat, 0.99), pct(lat, 1.0), pct(det, 0.5), pct(det, 0.99), pct(took, 0.5), pct(took, 0.99));
      for (auto [s, c] : steps) std::printf(" %d:%d", s, c);
      std::printf("; lowest free %s (floor %s); ends", format_size(lowest == UINT64_MAX ? 0 : lowest).c_str(),
                  format_size(floor).c_str());
      for (auto [e, c] : ends) std::printf(" %s x%d", e.c_str(), c);
      std::printf("; OOM kills %llu; mean %.2f s\n", static_cast<unsigned long long>(oom), secs / runs);
      std::printf("%-5s %-5s: each step took (p50/max ms):", sc.name, mode_name(mode));
      for (auto& [k, v] : step_us) std::printf(" %d: %.1f/%.1f", k, pct(v, 0.5), pct(v, 1.0));
      std::printf("; checks %llu, wakes timer %llu psi %llu reclaim %llu; sampler%s gap p50 %.3f p99 %.3f ms\n",
                  static_cast<unsigned long long>(checks), static_cast<unsigned long long>(wt),
                  static_cast<unsigned long long>(wp), static_cast<unsigned long long>(wr),
                  sampler_rt ? " (SCHED_FIFO 2)" : " (not real-time)", pct(gaps, 0.5), pct(gaps, 0.99));
      if (mode != Mode::loop) std::printf("%-5s %-5s: sources %s\n", sc.name, mode_name(mode), sources.c_str());
      std::fflush(stdout);
    }
    auto un = run_once(paths, tuner, file, limit, sc.keep, floor, Mode::untuned, n++);
    std::printf("%-5s untuned: lowest free %s; end %s; OOM kills %llu; %.2f s\n", sc.name,
                format_size(un.lowest_free == UINT64_MAX ? 0 : un.lowest_free).c_str(), un.end.c_str(),
                static_cast<unsigned long long>(un.oom), un.seconds);
    std::fflush(stdout);
  }
  (void)tuner.revert_all();
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
