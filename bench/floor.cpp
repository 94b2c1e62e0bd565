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
//
// Scenarios, each run --runs times with the floor and once untuned:
//   cache: the loader keeps a 50% of the limit working set of copies (it hands the rest to the
//          "GPU" and frees it): the page cache of the file is what drives free memory under the
//          floor; step 1 (evict) is expected to restore it.
//   grow:  the loader keeps every copy, 120% of the limit: nothing but stopping it can hold the
//          floor; untuned, the kernel's OOM killer ends it.
// Figures: crossing -> first action (p50/p99, from a 1 ms sampler of the cgroup's usage to the
// step done), steps taken, lowest free vs the floor, how the loader ended (exit, SIGTERM by the
// floor, SIGKILL by the OOM killer), the cgroup's OOM kills.
#include <fcntl.h>
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

using namespace spark;
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
  std::vector<int64_t> first_action_us;  // per crossing
  std::vector<int64_t> detect_us;        // the sampler's crossing -> the keeper's floor_crossed
  std::vector<int64_t> took_us;          // the first step itself
  int max_step = 0;
  uint64_t lowest_free = UINT64_MAX;
  std::string end;  // exit 0, SIGTERM, SIGKILL ...
  uint64_t oom = 0;
  double seconds = 0;
  std::vector<int> steps;
  std::map<int, std::vector<int64_t>> step_us;  // how long each step took, by step
};

std::string describe_end(int st) {
  if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st))
    return WTERMSIG(st) == SIGKILL ? "SIGKILL" : WTERMSIG(st) == SIGTERM ? "SIGTERM" : "signal " + std::to_string(WTERMSIG(st));
  return "?";
}

RunResult run_once(const HostPaths& paths, Tuner& tuner, const std::string& file, uint64_t limit, uint64_t keep,
                   uint64_t floor, bool tuned, int n) {
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
  // 1 ms sampler: the true crossing times (free going under the floor).
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<Clock::time_point> crossings;
  std::thread sampler([&] {
    bool below = false;
    while (!stop) {
      uint64_t f = free_of();
      bool b = f < floor;
      if (b && !below) {
        std::lock_guard<std::mutex> l(mu);
        crossings.push_back(Clock::now());
      }
      below = b;
      {
        std::lock_guard<std::mutex> l(mu);
        res.lowest_free = std::min(res.lowest_free, f);
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  auto start = Clock::now();
  pid_t pid = cg.spawn("floor-loader", [&] { loader(file, keep); });
  std::vector<std::pair<Clock::time_point, int>> actions;  // first action of each keeper crossing
  std::vector<Clock::time_point> detected;                 // the keeper's crossing, for each
  std::vector<Clock::time_point> restored;                 // the keeper saw memory above the floor
  std::unique_ptr<FloorKeeper> keeper;
  if (tuned) {
    FloorSpec s;
    s.free_bytes = floor;
    s.hysteresis = floor / 4;
    s.grace = 100ms;
    s.max_pause = 1000ms;
    s.kill_grace = 1000ms;
    if (const char* p = std::getenv("FLOOR_PERIOD_MS")) s.period = std::chrono::milliseconds(std::atoi(p));
    bool first_after_cross = false;
    Clock::time_point keeper_crossed{};
    keeper = std::make_unique<FloorKeeper>(paths, tuner, "bench", std::vector<fs::path>{file}, pid, s,
                                           [&](const Event& e) {
                                             if (e.type == "floor_restored") restored.push_back(Clock::now());
                                             if (e.type == "floor_crossed") {
                                               first_after_cross = true;
                                               keeper_crossed = Clock::now();
                                             }
                                             if (e.type == "floor_action") {
                                               int step = e.data.value("step", 0);
                                               res.max_step = std::max(res.max_step, step);
                                               res.steps.push_back(step);
                                               res.step_us[step].push_back(e.data.value("took_us", int64_t{0}));
                                               if (first_after_cross) {
                                                 actions.push_back({Clock::now(), step});
                                                 detected.push_back(keeper_crossed);
                                                 res.took_us.push_back(e.data.value("took_us", int64_t{0}));
                                               }
                                               first_after_cross = false;
                                             }
                                           });
    // The free floor only: one read of memory.usage_in_bytes per check (memory.stat costs more).
    keeper->set_meminfo_source([&]() -> Result<MemInfo> { return MemInfo::of(limit, limit, free_of()); });
  }
  int st = 0;
  for (;;) {
    if (keeper && Clock::now() >= keeper->next_check()) keeper->tick(Clock::now());
    pid_t w = ::waitpid(pid, &st, WNOHANG);
    if (w == pid) break;
    auto next = keeper ? keeper->next_check() : Clock::now() + 10ms;
    std::this_thread::sleep_until(std::min(next, Clock::now() + 10ms));
  }
  res.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (keeper) (void)keeper->finish();
  stop = true;
  sampler.join();
  res.end = describe_end(st);
  res.oom = oom_kills(dir);
  // Pair each keeper crossing's first action with the sampler's last crossing before it.
  for (size_t i = 0; i < actions.size(); ++i) {
    auto t = actions[i].first;
    Clock::time_point c{};
    for (auto x : crossings)
      if (x <= detected[i]) c = x;
    // The keeper saw memory above the floor after the sampler's last crossing (a dip shorter than
    // the sampler's 1 ms): the crossing was after that reading.
    for (auto r : restored)
      if (r <= detected[i]) c = std::max(c, r);
    if (c == Clock::time_point{}) continue;
    res.first_action_us.push_back(std::chrono::duration_cast<std::chrono::microseconds>(t - c).count());
    res.detect_us.push_back(std::chrono::duration_cast<std::chrono::microseconds>(detected[i] - c).count());
  }
  (void)cg.wait();
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 10;
  uint64_t limit_mib = 1024, file_mib = 1536;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--runs") runs = std::atoi(argv[i + 1]);
    if (a == "--limit-mib") limit_mib = std::stoull(argv[i + 1]);
    if (a == "--file-mib") file_mib = std::stoull(argv[i + 1]);
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
  std::printf("bench/floor: memcg limit %s, free floor %s (20%%), file %s, %d runs per scenario\n",
              format_size(limit).c_str(), format_size(floor).c_str(), format_size(file_mib * k_mib).c_str(), runs);
  struct Scenario {
    const char* name;
    uint64_t keep;
  } scenarios[] = {{"cache", limit / 2}, {"grow", limit / 5 * 6}};
  for (const auto& sc : scenarios) {
    std::vector<int64_t> lat, det, took;
    uint64_t lowest = UINT64_MAX, oom = 0;
    int max_step = 0;
    std::map<std::string, int> ends;
    std::map<int, int> steps;
    std::map<int, std::vector<int64_t>> step_us;
    double secs = 0;
    for (int r = 0; r < runs; ++r) {
      auto res = run_once(paths, tuner, file, limit, sc.keep, floor, true, r);
      lat.insert(lat.end(), res.first_action_us.begin(), res.first_action_us.end());
      det.insert(det.end(), res.detect_us.begin(), res.detect_us.end());
      took.insert(took.end(), res.took_us.begin(), res.took_us.end());
      lowest = std::min(lowest, res.lowest_free);
      oom += res.oom;
      max_step = std::max(max_step, res.max_step);
      ends[res.end]++;
      for (int s : res.steps) steps[s]++;
      for (auto& [k, v] : res.step_us) step_us[k].insert(step_us[k].end(), v.begin(), v.end());
      secs += res.seconds;
    }
    auto pct = [](std::vector<int64_t> v, double p) -> double {
      if (v.empty()) return -1;
      std::sort(v.begin(), v.end());
      size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
      return static_cast<double>(v[i]) / 1000.0;
    };
    std::printf("%-6s floor:   crossings %zu, crossing->first action done p50 %.2f ms p99 %.2f ms max %.2f ms "
                "(detection p50 %.2f p99 %.2f; the step itself p50 %.2f p99 %.2f); steps",
                sc.name, lat.size(), pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1.0), pct(det, 0.5), pct(det, 0.99),
                pct(took, 0.5), pct(took, 0.99));
    for (auto [s, c] : steps) std::printf(" %d:%d", s, c);
    std::printf("; lowest free %s (floor %s); ends", format_size(lowest == UINT64_MAX ? 0 : lowest).c_str(),
                format_size(floor).c_str());
    for (auto [e, c] : ends) std::printf(" %s x%d", e.c_str(), c);
    std::printf("; OOM kills %llu; mean %.2f s\n", static_cast<unsigned long long>(oom), secs / runs);
    std::printf("%-6s floor:   each step took (p50/max ms):", sc.name);
    for (auto& [k, v] : step_us) std::printf(" %d: %.1f/%.1f", k, pct(v, 0.5), pct(v, 1.0));
    std::printf("\n");
    auto un = run_once(paths, tuner, file, limit, sc.keep, floor, false, 1000);
    std::printf("%-6s untuned: lowest free %s; end %s; OOM kills %llu; %.2f s\n", sc.name,
                format_size(un.lowest_free == UINT64_MAX ? 0 : un.lowest_free).c_str(), un.end.c_str(),
                static_cast<unsigned long long>(un.oom), un.seconds);
    std::fflush(stdout);
  }
  (void)tuner.revert_all();
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
