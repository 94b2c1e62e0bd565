// bench/load_window: the headline figure of load windows. A model-load simulation (checkpoint-like
// shard files read the way loaders read them: sequential read(2) of 16 MiB, or mmap of every shard
// then a sequential copy out of the mapping) run side by side under
//   1. untuned,
//   2. the manual recipe (drop_caches every 100 ms, readahead 8 KB, min_free_kbytes 1 GiB,
//      vfs_cache_pressure 200, dirty_ratio 5, dirty_background_ratio 2),
//   3. `spark-tune run` with defaults (and optional --readahead variants),
// measuring load time, the page-cache peak (sampled every 15 ms: the shards' resident bytes by
// cachestat(2), and meminfo Cached above its value at start) and how much of an unrelated warm file
// is still cached after the load.
//
//   bench/load_window --dir /var/tmp --shards 4 --shard-size 1G --warm-size 1G
//
// Needs root. Every setting it changes goes through the Tuner (owner "bench") and is reverted; the
// files are removed at the end.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/fs.h"
#include "core/units.h"
#include "tune/page_cache.h"
#include "tune/readahead.h"
#include "tune/trigger.h"
#include "tune/tuner.h"

using spark::state::sysctl_target;

using spark::tune::Actuator, spark::tune::CacheKeeper, spark::tune::CacheKeeperOptions, spark::tune::Change,
    spark::tune::FdCache, spark::tune::HostActuator, spark::tune::HostPageCounts, spark::tune::KeeperHost,
    spark::tune::MappedPolicy, spark::tune::ProcessMappings, spark::tune::Tuner, spark::tune::cached_bytes,
    spark::tune::drop_caches, spark::tune::evict_file, spark::tune::read_readahead_kb, spark::tune::readahead_change,
    spark::tune::readahead_device_of_file;

namespace {

using namespace spark;
using Clock = std::chrono::steady_clock;

std::string g_self;

// ---- the loader (runs as its own process: `load_window --loader read|mmap|mmap-hold FILE...`) ----
// mmap-hold keeps its mappings, untouched, for 8 s after the read: a server that keeps the weights
// mapped after the load (the tests/vm guests use it to see idle mappings paged out).
// The loader's own figures (--detail, issue 14: where an mmap load's time goes), written to the
// file named by LOAD_WINDOW_STATS when it is set: "copy_s elapsed_s utime_s stime_s majflt minflt
// nvcsw nivcsw read_bytes run_ns runq_wait_ns". copy_s is the load itself (mapping and copy out,
// without the unmap); run_ns and runq_wait_ns are from <proc>/self/schedstat: time on a CPU and
// time runnable but waiting for one (the keeper's thread competing for the 2 cores shows there);
// the rest of elapsed_s is time asleep (faults waiting on reads, locks).
void write_loader_stats(Clock::time_point t0, Clock::time_point copied) {
  const char* out = std::getenv("LOAD_WINDOW_STATS");
  if (!out || !*out) return;
  const auto t1 = Clock::now();
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  uint64_t read_bytes = 0, run_ns = 0, wait_ns = 0;
  const fs::path self = HostPaths::system().proc / "self";
  if (auto io = read_file(self / "io"))
    for (const auto& l : split_lines(*io))
      if (l.rfind("read_bytes: ", 0) == 0) read_bytes = std::stoull(l.substr(12));
  if (auto ss = read_file(self / "schedstat")) std::istringstream(*ss) >> run_ns >> wait_ns;
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  FILE* f = std::fopen(out, "w");
  if (!f) return;
  std::fprintf(f, "%.4f %.4f %.4f %.4f %ld %ld %ld %ld %llu %llu %llu\n",
               std::chrono::duration<double>(copied - t0).count(), std::chrono::duration<double>(t1 - t0).count(),
               secs(ru.ru_utime), secs(ru.ru_stime), ru.ru_majflt, ru.ru_minflt, ru.ru_nvcsw, ru.ru_nivcsw,
               static_cast<unsigned long long>(read_bytes), static_cast<unsigned long long>(run_ns),
               static_cast<unsigned long long>(wait_ns));
  std::fclose(f);
}

int loader_main(const std::string& kind, const std::vector<std::string>& files) {
  const auto t0 = Clock::now();
  auto copied = t0;
  std::vector<char> sink(16 << 20);  // stands in for the device buffer
  uint64_t total = 0;
  if (kind == "read") {
    for (const auto& f : files) {
      int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return 3;
      ssize_t n;
      while ((n = ::read(fd, sink.data(), sink.size())) > 0) total += static_cast<uint64_t>(n);
      ::close(fd);
    }
    copied = Clock::now();
  } else if (kind == "mmap-each") {
    // One shard at a time: map, copy out, unmap (a loader that maps shard after shard).
    for (const auto& f : files) {
      int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return 3;
      struct stat st {};
      ::fstat(fd, &st);
      size_t len = static_cast<size_t>(st.st_size);
      void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
      ::close(fd);
      if (m == MAP_FAILED) return 4;
      for (size_t off = 0; off < len; off += sink.size()) {
        size_t n = std::min(sink.size(), len - off);
        std::memcpy(sink.data(), static_cast<unsigned char*>(m) + off, n);
        total += n;
      }
      ::munmap(m, len);
    }
    copied = Clock::now();
  } else {
    // mmap / mmap-one: every file mapped first, copied out in order, unmapped at the end (mmap-one
    // is given one large file: a GGUF mapped whole).
    struct Map {
      unsigned char* p;
      size_t len;
    };
    std::vector<Map> maps;
    for (const auto& f : files) {  // map every shard first, as a loader that indexes tensors does
      int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return 3;
      struct stat st {};
      ::fstat(fd, &st);
      void* m = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
      ::close(fd);
      if (m == MAP_FAILED) return 4;
      maps.push_back({static_cast<unsigned char*>(m), static_cast<size_t>(st.st_size)});
    }
    for (auto& m : maps)
      for (size_t off = 0; off < m.len; off += sink.size()) {
        size_t n = std::min(sink.size(), m.len - off);
        std::memcpy(sink.data(), m.p + off, n);
        total += n;
      }
    copied = Clock::now();
    if (kind == "mmap-hold") std::this_thread::sleep_for(std::chrono::seconds(8));
    for (auto& m : maps) ::munmap(m.p, m.len);
  }
  volatile char keep = sink[123];
  (void)keep;
  write_loader_stats(t0, copied);
  return total > 0 ? 0 : 5;
}

// ---- the server (`load_window --loader server FILE SECONDS OUT`): a CPU llama.cpp-style server
// that maps its weights and reads all of them for every token (one 8-byte word per 64-byte line),
// for SECONDS. The first pass is its load (the file starts cold); OUT gets "first_pass_s
// tokens_per_s passes sum majflt second_pass_s steady_tokens_per_s": tokens/s over the passes after
// the first, the major faults after the first pass (weights read from disk again), the second
// pass's time, and tokens/s over the passes after the second (the weights back in place).
int server_main(const std::vector<std::string>& a) {
  if (a.size() != 3) return 2;
  int fd = ::open(a[0].c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 3;
  struct stat st {};
  ::fstat(fd, &st);
  const size_t len = static_cast<size_t>(st.st_size);
  void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return 4;
  const auto* w = static_cast<const volatile uint64_t*>(m);
  const auto t0 = Clock::now(), deadline = t0 + std::chrono::milliseconds(static_cast<int64_t>(std::stod(a[1]) * 1000));
  uint64_t sum = 0, passes = 0;
  Clock::time_point first_end{}, second_end{};
  struct rusage ru0 {};
  while (Clock::now() < deadline || passes < 2) {
    for (size_t i = 0; i < len / 8; i += 8) sum += w[i];
    if (++passes == 1) {
      first_end = Clock::now();
      ::getrusage(RUSAGE_SELF, &ru0);
    } else if (passes == 2) {
      second_end = Clock::now();
    }
  }
  const auto t1 = Clock::now();
  struct rusage ru1 {};
  ::getrusage(RUSAGE_SELF, &ru1);
  double first = std::chrono::duration<double>(first_end - t0).count();
  double tps = static_cast<double>(passes - 1) / std::chrono::duration<double>(t1 - first_end).count();
  FILE* out = std::fopen(a[2].c_str(), "w");
  if (!out) return 5;
  double steady =
      passes > 2 ? static_cast<double>(passes - 2) / std::chrono::duration<double>(t1 - second_end).count() : 0;
  std::fprintf(out, "%.4f %.3f %llu %llu %ld %.4f %.3f\n", first, tps, static_cast<unsigned long long>(passes),
               static_cast<unsigned long long>(sum & 1), ru1.ru_majflt - ru0.ru_majflt,
               std::chrono::duration<double>(second_end - first_end).count(), steady);
  std::fclose(out);
  ::munmap(m, len);
  return 0;
}

// ---- measuring ----
uint64_t meminfo_cached() {
  auto text = read_file(HostPaths::system().proc / "meminfo");
  if (!text) return 0;
  for (const auto& l : split_lines(*text))
    if (l.rfind("Cached:", 0) == 0) return std::stoull(l.substr(7)) * 1024;
  return 0;
}

struct Sample {
  uint64_t shard_peak = 0;
  uint64_t cached_peak_above_start = 0;
};

// CPU seconds (user + system) of a process or thread from its stat file, fields 14 and 15.
double stat_cpu_seconds(const fs::path& stat) {
  auto text = read_file(stat);
  if (!text) return -1;
  auto close = text->rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(text->substr(close + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && (in >> field); ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct Sampler {
  std::vector<fs::path> shards;
  std::atomic<bool> stop{false};
  Sample s;
  uint64_t start = 0;
  std::thread t;
  // --detail: the CPU of the keeper's follower threads ("spark-follow") in the agent, sampled with
  // the cache (a window's thread ends with the window, before the run's end can read it).
  pid_t agent = 0;
  std::map<std::string, double> follower_cpu;  // by thread id, the last value seen
  void sample_followers() {
    std::error_code ec;
    const fs::path task = HostPaths::system().proc / std::to_string(agent) / "task";
    for (auto it = fs::directory_iterator(task, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      auto comm = read_file(it->path() / "comm");
      if (!comm || comm->rfind("spark-follow", 0) != 0) continue;
      if (double c = stat_cpu_seconds(it->path() / "stat"); c >= 0) follower_cpu[it->path().filename().string()] = c;
    }
  }
  double follower_seconds() const {
    double sum = 0;
    for (const auto& [tid, c] : follower_cpu) sum += c;
    return sum;
  }
  void begin() {
    start = meminfo_cached();
    t = std::thread([this] {
      while (!stop) {
        uint64_t sum = 0;
        for (const auto& f : shards) sum += cached_bytes(f).value_or(0);
        s.shard_peak = std::max(s.shard_peak, sum);
        uint64_t c = meminfo_cached();
        if (c > start) s.cached_peak_above_start = std::max(s.cached_peak_above_start, c - start);
        if (agent > 0) sample_followers();
        std::this_thread::sleep_for(std::chrono::milliseconds(15));
      }
    });
  }
  void end() {
    stop = true;
    t.join();
  }
};

struct RunUsage {
  double user = 0, sys = 0;  // CPU of the command and the children it waited for (the loader)
};

int run_argv(std::vector<std::string> argv, RunUsage* usage = nullptr) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, 1);
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  if (usage) {
    usage->user = static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6;
    usage->sys = static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) / 1e6;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool make_file(const fs::path& p, uint64_t bytes) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::vector<uint64_t> buf((8 << 20) / 8);
  uint64_t x = 0x9E3779B97F4A7C15ull ^ bytes;
  for (uint64_t done = 0; done < bytes; done += buf.size() * 8) {
    for (auto& w : buf) w = (x = x * 6364136223846793005ull + 1442695040888963407ull);
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size() * 8, bytes - done));
    if (::write(fd, buf.data(), n) != static_cast<ssize_t>(n)) return false;
  }
  ::fsync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  return true;
}

// --detail: where a load's time goes (issue 14). The loader's own figures (write_loader_stats),
// and around the run: bytes read from the files' device (/sys/block/DEV/stat: pages read twice
// show as more than the files' size), TLB shootdown interrupts (/proc/interrupts, all CPUs), the
// agent's CPU and its follower threads' CPU.
struct Detail {
  double copy = 0, elapsed = 0, utime = 0, stime = 0;
  double majflt = 0, minflt = 0, nvcsw = 0, nivcsw = 0;
  double read_bytes = 0, run_s = 0, runq_s = 0;
  double disk_read = 0, tlb = 0, agent_cpu = 0, follower_cpu = 0;
  bool loader_ok = false;
};

uint64_t disk_read_bytes(const std::string& device) {
  auto text = read_file(HostPaths::system().sys / "block" / device / "stat");
  if (!text) return 0;
  std::istringstream in(*text);
  uint64_t ios = 0, merges = 0, sectors = 0;
  in >> ios >> merges >> sectors;
  return sectors * 512;
}

uint64_t tlb_shootdowns() {
  auto text = read_file(HostPaths::system().proc / "interrupts");
  if (!text) return 0;
  for (const auto& l : split_lines(*text)) {
    auto colon = l.find(':');
    if (colon == std::string::npos || l.substr(0, colon).find("TLB") == std::string::npos) continue;
    std::istringstream in(l.substr(colon + 1));
    uint64_t sum = 0, n = 0;
    while (in >> n) sum += n;
    return sum;
  }
  return 0;
}

bool read_loader_stats(const fs::path& p, Detail& d) {
  auto text = read_file(p);
  if (!text) return false;
  std::istringstream in(*text);
  double run_ns = 0, wait_ns = 0;
  in >> d.copy >> d.elapsed >> d.utime >> d.stime >> d.majflt >> d.minflt >> d.nvcsw >> d.nivcsw >> d.read_bytes >>
      run_ns >> wait_ns;
  d.run_s = run_ns / 1e9;
  d.runq_s = wait_ns / 1e9;
  d.loader_ok = static_cast<bool>(in);
  return d.loader_ok;
}

struct Row {
  std::string scenario, loader;
  double seconds = 0;
  uint64_t shard_peak = 0, cached_peak = 0;
  double warm_kept = 0;
  RunUsage usage;
  int rc = 0;
  Detail detail;
};

// CPU seconds (user + system) the process has used.
double process_cpu_seconds(pid_t pid) {
  return stat_cpu_seconds(HostPaths::system().proc / std::to_string(pid) / "stat");
}

// --keeper-cost N,M,...: the agent's CPU while N idle windows (each over a file of its own that
// nobody reads) are open, over --seconds S (issue 13 defect 11). One private agent per count.
int keeper_cost_main(const std::string& spark_tune, const fs::path& dir, const std::vector<int>& counts, int seconds,
                     const HostPaths& paths) {
  fs::path work = dir / ("spark-keeper-cost-" + std::to_string(::getpid()));
  fs::create_directories(work);
  int max = *std::max_element(counts.begin(), counts.end());
  std::vector<fs::path> files;
  for (int i = 0; i < max; ++i) {
    files.push_back(work / ("model-" + std::to_string(i) + ".bin"));
    if (!make_file(files.back(), 1 << 20)) return 1;
  }
  std::printf("| windows | agent CPU over %d s | %% of one CPU |\n|---|---|---|\n", seconds);
  for (int n : counts) {
    run_argv({spark_tune, "window", "list"});  // starts the private agent
    auto pid_text = read_value(paths.run / "agent.pid");
    if (!pid_text) {
      std::cerr << "no agent pid\n";
      return 1;
    }
    pid_t agent = static_cast<pid_t>(std::stol(*pid_text));
    for (int i = 0; i < n; ++i)
      if (run_argv({spark_tune, "window", "begin", "--no-overlay", "--ttl", "10m", "--files",
                    files[static_cast<size_t>(i)].string()}) != 0) {
        std::cerr << "window begin failed\n";
        run_argv({spark_tune, "window", "end", "--all"});
        return 1;
      }
    std::this_thread::sleep_for(std::chrono::seconds(2));
    double c0 = process_cpu_seconds(agent);
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    double c1 = process_cpu_seconds(agent);
    run_argv({spark_tune, "window", "end", "--all"});
    ::kill(agent, SIGTERM);
    for (int i = 0; i < 100 && ::kill(agent, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::printf("| %d | %.2f s | %.2f%% |\n", n, c1 - c0, (c1 - c0) / seconds * 100);
    std::fflush(stdout);
  }
  std::error_code ec;
  fs::remove_all(work, ec);
  return 0;
}

// --server: tokens/s of a CPU llama.cpp-style server (server_main) over one file of --shard-size,
// for --seconds, started with its weights cold, untuned and under `spark-tune run --files FILE`
// (a window for the whole run: the keeper sees the load pass as a reader, and must find the
// server's use in place), interleaved per repetition (issue 14: tokens/s within 5%).
int server_bench_main(const std::string& spark_tune, const fs::path& dir, uint64_t size, int seconds, int reps,
                      const std::vector<std::string>& scenarios) {
  fs::path work = dir / ("spark-server-bench-" + std::to_string(::getpid()));
  fs::create_directories(work);
  fs::path weights = work / "model.gguf", out = work / "server.out";
  if (!make_file(weights, size)) return 1;
  run_argv({spark_tune, "window", "list"});  // starts the private agent outside the timed runs
  struct ServerRow {
    std::string scenario;
    double first = 0, tps = 0, majflt = 0, second = 0, steady = 0;
    uint64_t cached_end = 0;
  };
  std::vector<ServerRow> rows;
  std::mt19937 rng(20261206);
  for (int rep = 0; rep < reps; ++rep) {
    std::vector<std::string> order = scenarios;
    std::shuffle(order.begin(), order.end(), rng);
    for (const auto& scenario : order) {
      (void)evict_file(weights);
      std::vector<std::string> cmd{g_self,      "--loader", "server", weights.string(), std::to_string(seconds),
                                   out.string()};
      // Two scenarios to tell the window's parts apart: no-overlay (the keeper without the sysctl
      // overlay) and cache-off (the overlay without the keeper).
      if (scenario != "untuned") {
        std::vector<std::string> st{spark_tune, "run"};
        if (scenario == "no-overlay") st.push_back("--no-overlay");
        if (scenario == "cache-off") st.insert(st.end(), {"--cache", "off"});
        st.insert(st.end(), {"--files", weights.string(), "--"});
        cmd.insert(cmd.begin(), st.begin(), st.end());
      }
      std::error_code ec;
      fs::remove(out, ec);
      int rc = run_argv(cmd);
      auto text = read_file(out);
      if (rc != 0 || !text) {
        std::cerr << scenario << ": the server failed (exit " << rc << ")\n";
        continue;
      }
      ServerRow r;
      r.scenario = scenario;
      std::istringstream in(*text);
      uint64_t passes = 0, parity = 0;
      in >> r.first >> r.tps >> passes >> parity >> r.majflt >> r.second >> r.steady;
      r.cached_end = cached_bytes(weights).value_or(0);
      std::cerr << scenario << ": first pass " << r.first << " s, " << r.tps << " tokens/s, second pass " << r.second
                << " s, " << r.majflt << " major faults after the first pass, " << r.steady
                << " tokens/s after the second\n";
      rows.push_back(r);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : (v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2);
  };
  std::printf(
      "| scenario | tokens/s, median (min-max) | vs untuned | first pass (the load), median s | second pass, median s "
      "| major faults after the first pass, median | tokens/s after the second pass, median | runs "
      "|\n|---|---|---|---|---|---|---|---|\n");
  double base = 0;
  for (const auto& scenario : scenarios) {
    std::vector<double> t, f, sec, mf, sd;
    for (const auto& r : rows)
      if (r.scenario == scenario)
        t.push_back(r.tps), f.push_back(r.first), sec.push_back(r.second), mf.push_back(r.majflt),
            sd.push_back(r.steady);
    if (t.empty()) continue;
    double med = median(t);
    if (scenario == "untuned") base = med;
    char vs[32] = "-";
    if (base > 0) std::snprintf(vs, sizeof vs, "%.3fx", med / base);
    std::printf("| %s | %.2f (%.2f-%.2f) | %s | %.2f | %.3f | %.0f | %.2f | %zu |\n", scenario.c_str(), med,
                *std::min_element(t.begin(), t.end()), *std::max_element(t.begin(), t.end()), vs, median(f),
                median(sec), median(mf), median(sd), t.size());
  }
  auto pid = read_value(HostPaths::system().run / "agent.pid");
  if (pid) ::kill(static_cast<pid_t>(std::stol(*pid)), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::error_code ec;
  fs::remove_all(work, ec);
  return 0;
}

// --fd-cost N: the keeper's pass over N files (uncached: one cachestat each) with every descriptor
// held (an LRU as large as the window) against opened per pass (an LRU of one), 50 passes each.
class MovingHost : public KeeperHost {
 public:
  HostPageCounts c;
  ProcessMappings none;
  const HostPageCounts* counts() override {
    ++c.file_pages;  // always moved: every tick is a pass
    return &c;
  }
  const ProcessMappings& mappings() override { return none; }
};

int fd_cost_main(const fs::path& dir, size_t n, const HostPaths& paths, Actuator& act) {
  fs::path work = dir / ("spark-fd-cost-" + std::to_string(::getpid()));
  fs::create_directories(work);
  std::vector<fs::path> files;
  for (size_t i = 0; i < n; ++i) {
    files.push_back(work / ("f" + std::to_string(i)));
    if (!make_file(files.back(), 4096)) return 1;
  }
  std::printf("| descriptors | files | pass over the files, median of 50 |\n|---|---|---|\n");
  for (size_t cap : {n, size_t{1}}) {
    FdCache fds(cap);
    CacheKeeperOptions o;
    o.mapped = MappedPolicy::off;
    o.files_per_tick = n;
    CacheKeeper keeper(paths, act, "bench", files, o, &fds);
    MovingHost host;
    std::vector<double> us;
    auto t = Clock::now();
    for (int i = 0; i < 51; ++i) {
      auto t0 = Clock::now();
      keeper.tick(t + std::chrono::milliseconds(50 * i), host);
      if (i > 0) us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    std::printf("| %s | %zu | %.0f us (%.2f us per file) |\n",
                cap == n ? "all held (LRU as large as the window)" : "opened per pass (LRU of 1)", n, us[us.size() / 2],
                us[us.size() / 2] / static_cast<double>(n));
  }
  std::error_code ec;
  fs::remove_all(work, ec);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  g_self = fs::read_symlink(HostPaths::system().proc / "self/exe").string();
  if (argc >= 3 && std::string(argv[1]) == "--loader" && std::string(argv[2]) == "server")
    return server_main(std::vector<std::string>(argv + 3, argv + argc));
  if (argc >= 3 && std::string(argv[1]) == "--loader")
    return loader_main(argv[2], std::vector<std::string>(argv + 3, argv + argc));

  std::string dir = "/var/tmp", spark_tune;
  int shards = 4, reps = 1;
  bool shuffle = false;
  uint64_t shard_size = 1ull << 30, warm_size = 1ull << 30;
  std::vector<std::string> loaders{"read", "mmap"};
  std::vector<std::string> scenarios{"untuned", "recipe", "spark-tune"};
  std::vector<std::string> readahead_variants;
  std::vector<int> keeper_cost;
  int seconds = 30;
  size_t fd_cost = 0;
  bool server = false, detail = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--dir")
      dir = next();
    else if (a == "--shards")
      shards = std::stoi(next());
    else if (a == "--shard-size")
      shard_size = parse_size(next()).value_or(1ull << 30);
    else if (a == "--warm-size")
      warm_size = parse_size(next()).value_or(1ull << 30);
    else if (a == "--reps")
      reps = std::stoi(next());
    else if (a == "--spark-tune")
      spark_tune = next();
    else if (a == "--shuffle")
      shuffle = true;
    else if (a == "--seconds")
      seconds = std::stoi(next());
    else if (a == "--fd-cost")
      fd_cost = std::stoul(next());
    else if (a == "--server")
      server = true;
    else if (a == "--detail")
      detail = true;
    else if (a == "--keeper-cost") {
      std::stringstream ss(next());
      for (std::string x; std::getline(ss, x, ',');) keeper_cost.push_back(std::stoi(x));
    } else if (a == "--loaders") {
      loaders.clear();
      std::stringstream ss(next());
      for (std::string x; std::getline(ss, x, ',');) loaders.push_back(x);
    } else if (a == "--scenarios") {
      scenarios.clear();
      std::stringstream ss(next());
      for (std::string x; std::getline(ss, x, ',');) scenarios.push_back(x);
    } else if (a == "--readahead-variants") {
      std::stringstream ss(next());
      for (std::string x; std::getline(ss, x, ',');) readahead_variants.push_back(x);
    } else {
      std::cerr << "usage: load_window [--dir D] [--shards N] [--shard-size SIZE] [--warm-size SIZE] [--reps N]\n"
                   "  [--loaders read,mmap,mmap-one,mmap-each] [--scenarios untuned,recipe,spark-tune] "
                   "[--readahead-variants 8k,128k,...]\n"
                   "  [--spark-tune PATH] [--shuffle] [--detail]\n"
                   "       load_window --keeper-cost 1,80 [--seconds 30] [--dir D]\n"
                   "       load_window --server [--seconds 10] [--shard-size SIZE] [--reps N] [--scenarios "
                   "untuned,spark-tune,no-overlay,cache-off] [--dir D]\n";
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::cerr << "load_window needs root (drop_caches, readahead)\n";
    return 2;
  }
  if (spark_tune.empty()) spark_tune = (fs::path(g_self).parent_path().parent_path() / "agent/spark-tune").string();
  for (const auto& v : readahead_variants) scenarios.push_back("spark-tune:" + v);

  // Private agent state so the benchmark never meets another agent.
  char tmpl[] = "/tmp/spark-bench-state-XXXXXX";
  fs::path state = ::mkdtemp(tmpl);
  ::setenv("SPARK_TUNE_STATE_DIR", (state / "state").c_str(), 1);
  ::setenv("SPARK_TUNE_RUN_DIR", (state / "run").c_str(), 1);
  HostPaths paths = HostPaths::system();
  HostActuator act(paths);
  Tuner tuner(paths, act);
  if (fd_cost) {
    int rc = fd_cost_main(dir, fd_cost, paths, act);
    std::error_code ec;
    fs::remove_all(state, ec);
    return rc;
  }
  if (server) {
    int rc = server_bench_main(spark_tune, dir, shard_size, seconds, reps, scenarios);
    std::error_code ec;
    fs::remove_all(state, ec);
    return rc;
  }
  if (!keeper_cost.empty()) {
    int rc = keeper_cost_main(spark_tune, dir, keeper_cost, seconds, paths);
    std::error_code ec;
    fs::remove_all(state, ec);
    return rc;
  }

  fs::path work = fs::path(dir) / ("spark-bench-" + std::to_string(::getpid()));
  fs::create_directories(work / "model");
  std::vector<fs::path> shard_files;
  std::cerr << "writing " << shards << " x " << format_size(shard_size) << " shards and a " << format_size(warm_size)
            << " warm file in " << work << "\n";
  for (int i = 0; i < shards; ++i) {
    shard_files.push_back(work / "model" / ("model-" + std::to_string(i) + ".safetensors"));
    if (!make_file(shard_files.back(), shard_size)) {
      std::cerr << "writing shards failed\n";
      return 1;
    }
  }
  fs::path warm = work / "unrelated.bin";
  make_file(warm, warm_size);
  // mmap-one: one file as large as all shards together, in the model directory too.
  fs::path whole = work / "model" / "model.gguf";
  bool want_whole = std::find(loaders.begin(), loaders.end(), "mmap-one") != loaders.end();
  if (want_whole && !make_file(whole, shard_size * static_cast<uint64_t>(shards))) {
    std::cerr << "writing " << whole << " failed\n";
    return 1;
  }
  auto files_of = [&](const std::string& loader) {
    return loader == "mmap-one" ? std::vector<fs::path>{whole} : shard_files;
  };
  auto device = readahead_device_of_file(paths, shard_files[0]);
  std::cerr << "shards on " << (device ? *device : describe(device.error())) << ", readahead "
            << (device ? std::to_string(read_readahead_kb(paths, *device).value_or(0)) + " KiB" : "?") << "\n";

  std::vector<Row> rows;
  auto cleanup_settings = [&] { (void)tuner.revert_all(); };
  run_argv({spark_tune, "window", "list"});  // start the agent outside the timed runs
  {
    // Warm-up, not recorded: this VM hands RAM to the allocator lazily, and the first pass that
    // fills the page cache pays for it; every scenario must start from the same memory state.
    std::vector<std::string> load{g_self, "--loader", "read"};
    for (const auto& f : shard_files) load.push_back(f.string());
    run_argv(load);
    run_argv(load);
  }

  // On this VM a scenario's memory state depends on the one before it (freed pages go back to the
  // hypervisor at once and the next touch pays a host fault), so --shuffle varies the order per
  // repetition (fixed seed, printed) instead of always running untuned after the same scenario.
  std::mt19937 rng(20261125);
  for (int rep = 0; rep < reps; ++rep)
    for (const auto& loader : loaders) {
      std::vector<std::string> order = scenarios;
      if (shuffle) std::shuffle(order.begin(), order.end(), rng);
      std::cerr << "repetition " << rep + 1 << " " << loader << ":";
      for (const auto& s : order) std::cerr << " " << s;
      std::cerr << "\n";
      for (const auto& scenario : order) {
        // Same start for everyone: shards cold, the unrelated file fully cached.
        for (const auto& f : shard_files) (void)evict_file(f);
        if (want_whole) (void)evict_file(whole);
        {
          int fd = ::open(warm.c_str(), O_RDONLY);
          std::vector<char> b(16 << 20);
          while (::read(fd, b.data(), b.size()) > 0) {
          }
          ::close(fd);
        }
        std::vector<std::string> load{g_self, "--loader", loader};
        for (const auto& f : files_of(loader)) load.push_back(f.string());
        std::vector<std::string> cmd = load;
        std::atomic<bool> stop_drop{false};
        std::thread dropper;
        if (scenario == "recipe") {
          std::vector<Change> recipe{{sysctl_target("vm.min_free_kbytes"), std::string("1048576"), "recipe"},
                                     {sysctl_target("vm.vfs_cache_pressure"), std::string("200"), "recipe"},
                                     {sysctl_target("vm.dirty_ratio"), std::string("5"), "recipe"},
                                     {sysctl_target("vm.dirty_background_ratio"), std::string("2"), "recipe"}};
          if (device) recipe.push_back(readahead_change(*device, 8, "recipe"));
          if (auto r = tuner.apply("bench:recipe", recipe); !r) {
            std::cerr << "recipe: " << describe(r.error()) << "\n";
            cleanup_settings();
            return 1;
          }
          dropper = std::thread([&] {
            while (!stop_drop) {
              (void)drop_caches(act, "bench:recipe", "drop_caches every 100 ms");
              std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
          });
        } else if (scenario.rfind("spark-tune", 0) == 0) {
          cmd = {spark_tune, "run", "--files", (work / "model").string()};
          // "spark-tune:128k" = --readahead 128k; "spark-tune:--cache-interval+50ms" = those options.
          if (auto colon = scenario.find(':'); colon != std::string::npos) {
            std::string extra = scenario.substr(colon + 1);
            if (extra.rfind("--", 0) == 0) {
              std::stringstream ss(extra);
              for (std::string x; std::getline(ss, x, '+');) cmd.push_back(x);
            } else {
              cmd.push_back("--readahead");
              cmd.push_back(extra);
            }
          }
          cmd.push_back("--");
          cmd.insert(cmd.end(), load.begin(), load.end());
        }
        Sampler sampler;
        sampler.shards = files_of(loader);
        Detail d;
        const fs::path stats_file = work / "loader.stats";
        pid_t agent = 0;
        uint64_t disk0 = 0, tlb0 = 0;
        double agent0 = 0;
        if (detail) {
          std::error_code ec;
          fs::remove(stats_file, ec);
          ::setenv("LOAD_WINDOW_STATS", stats_file.c_str(), 1);
          if (auto pid = read_value(paths.run / "agent.pid")) agent = static_cast<pid_t>(std::stol(*pid));
          sampler.agent = agent;
          if (device) disk0 = disk_read_bytes(*device);
          tlb0 = tlb_shootdowns();
          if (agent > 0) agent0 = process_cpu_seconds(agent);
        }
        sampler.begin();
        auto t0 = Clock::now();
        RunUsage usage;
        int rc = run_argv(cmd, &usage);
        double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        sampler.end();
        if (detail) {
          ::unsetenv("LOAD_WINDOW_STATS");
          read_loader_stats(stats_file, d);
          if (device) d.disk_read = static_cast<double>(disk_read_bytes(*device) - disk0);
          d.tlb = static_cast<double>(tlb_shootdowns() - tlb0);
          if (agent > 0) d.agent_cpu = process_cpu_seconds(agent) - agent0;
          d.follower_cpu = sampler.follower_seconds();
        }
        if (scenario == "recipe") {
          stop_drop = true;
          dropper.join();
          (void)tuner.release("bench:recipe");
        }
        double kept = static_cast<double>(cached_bytes(warm).value_or(0)) / static_cast<double>(warm_size);
        rows.push_back(
            {scenario, loader, secs, sampler.s.shard_peak, sampler.s.cached_peak_above_start, kept, usage, rc, d});
        std::cerr << scenario << " " << loader << ": " << secs << " s\n";
      }
    }

  // Median over the repetitions (scenarios were interleaved within each repetition).
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : (v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2);
  };
  std::printf(
      "| loader | scenario | load time, median (min-max) s | vs untuned | shard cache peak | Cached peak above start | "
      "unrelated file still cached | loader CPU user/sys s | failed runs |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& loader : loaders) {
    double base = 0;
    for (const auto& scenario : scenarios) {
      std::vector<double> t, sp, cp, kept, us, sy;
      int failed = 0;
      for (const auto& r : rows)
        if (r.loader == loader && r.scenario == scenario) {
          t.push_back(r.seconds);
          sp.push_back(static_cast<double>(r.shard_peak));
          cp.push_back(static_cast<double>(r.cached_peak));
          kept.push_back(r.warm_kept);
          us.push_back(r.usage.user);
          sy.push_back(r.usage.sys);
          failed += r.rc != 0;
        }
      if (t.empty()) continue;
      double med = median(t);
      if (scenario == "untuned") base = med;
      char vs[32] = "-";
      if (base > 0) std::snprintf(vs, sizeof vs, "%+.0f%%", (med / base - 1) * 100);
      std::printf("| %s | %s | %.2f (%.2f-%.2f) | %s | %s | %s | %.1f%% | %.2f / %.2f | %d |\n", loader.c_str(),
                  scenario.c_str(), med, *std::min_element(t.begin(), t.end()), *std::max_element(t.begin(), t.end()),
                  vs, format_size(static_cast<uint64_t>(median(sp))).c_str(),
                  format_size(static_cast<uint64_t>(median(cp))).c_str(),
                  *std::min_element(kept.begin(), kept.end()) * 100, median(us), median(sy), failed);
    }
  }
  if (detail) {
    std::printf(
        "\n| loader | scenario | run s | loader copy s / elapsed s | on CPU s (user / sys) | waiting for a CPU s | "
        "asleep s | major / minor faults | loader read MiB | device read MiB | TLB shootdowns | agent CPU s | "
        "follower CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& loader : loaders)
      for (const auto& scenario : scenarios) {
        std::vector<const Row*> mine;
        for (const auto& r : rows)
          if (r.loader == loader && r.scenario == scenario && r.detail.loader_ok) mine.push_back(&r);
        if (mine.empty()) continue;
        auto med = [&](auto field) {
          std::vector<double> v;
          for (const auto* r : mine) v.push_back(field(r->detail));
          return median(v);
        };
        std::vector<double> t;
        for (const auto* r : mine) t.push_back(r->seconds);
        const double mib = 1 << 20;
        std::printf(
            "| %s | %s | %.2f | %.2f / %.2f | %.2f (%.2f / %.2f) | %.2f | %.2f | %.0f / %.0f | %.0f | %.0f | %.0f | "
            "%.2f "
            "| %.2f |\n",
            loader.c_str(), scenario.c_str(), median(t), med([](const Detail& d) { return d.copy; }),
            med([](const Detail& d) { return d.elapsed; }), med([](const Detail& d) { return d.run_s; }),
            med([](const Detail& d) { return d.utime; }), med([](const Detail& d) { return d.stime; }),
            med([](const Detail& d) { return d.runq_s; }),
            med([](const Detail& d) { return d.elapsed - d.run_s - d.runq_s; }),
            med([](const Detail& d) { return d.majflt; }), med([](const Detail& d) { return d.minflt; }),
            med([&](const Detail& d) { return d.read_bytes / mib; }),
            med([&](const Detail& d) { return d.disk_read / mib; }), med([](const Detail& d) { return d.tlb; }),
            med([](const Detail& d) { return d.agent_cpu; }), med([](const Detail& d) { return d.follower_cpu; }));
      }
  }
  cleanup_settings();
  // Stop the private agent and remove everything.
  if (auto pid = read_value(paths.run / "agent.pid"); pid) ::kill(static_cast<pid_t>(std::stol(*pid)), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::error_code ec;
  fs::remove_all(work, ec);
  fs::remove_all(state, ec);
  return 0;
}
