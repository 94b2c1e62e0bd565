// agent_soak (issue 13): one agent under everything at once for a chosen duration --
//   - 50 windows begun and ended at random (a random hold of 0.2-4 s), on one shared file and on
//     files of their own, each with the load-window overlay;
//   - one window over N files (default 30 000) held throughout;
//   - 200 idle connections on the control socket and 200 on /metrics (those past /metrics' cap
//     get 503; the ones dropped at its deadline are opened again);
//   - 20 clients polling window.list (the status of the windows) back to back;
//   - a memcg OOM storm: processes that allocate past the limit of a memory cgroup of our own.
// It reports the p50/p99 of window.list answered at the socket (connect, send, full answer; no
// client start-up), the agent's peak descriptors, RSS and CPU, OOM kills (the kernel's counter)
// against what the agent counted (events, plus what it says it dropped), and whether every value
// in /proc/sys/vm and every device's read_ahead_kb was back at the end. Run it under the kernel
// lock. Interrupted (Ctrl-C, SIGTERM) it stops early and restores the same way.
//
// Usage: agent_soak [--seconds S] [--files N] [--windows W] [--idle I] [--pollers P]
//                   [--nice N] [--dir SCRATCH] [--spark-tune PATH]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/fs.h"
#include "core/memory_cgroup.h"
#include "core/port.h"
#include "daemon/protocol.h"
#include "stats.h"
#include "window/window.h"

using spark::window::WindowSpec, spark::window::spec_to_json;

using namespace spark;
using spark::bench::percentile;
using namespace std::chrono_literals;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct Options {
  int seconds = 180;
  size_t files = 30000;
  int windows = 50;
  int idle = 200;
  int pollers = 20;
  int nice = 0;
  fs::path dir = "/var/tmp";
  std::string spark_tune;
};

// Every value a window may change: /proc/sys/vm/* and each block device's read_ahead_kb.
std::map<std::string, std::string> snapshot() {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/sys/vm", ec)) {
    std::string name = e.path().filename();
    if (name == "drop_caches" || name == "compact_memory" || name == "stat_refresh") continue;  // triggers
    if (auto v = read_value(e.path())) out["vm." + name] = *v;
  }
  for (const auto& e : fs::directory_iterator("/sys/block", ec))
    if (auto v = read_value(e.path() / "queue/read_ahead_kb"))
      out[e.path().filename().string() + ".read_ahead_kb"] = *v;
  return out;
}

uint64_t vmstat(const std::string& key) {
  auto text = read_file("/proc/vmstat");
  if (!text) return 0;
  for (const auto& l : split_lines(*text))
    if (l.rfind(key + " ", 0) == 0) return std::strtoull(l.c_str() + key.size() + 1, nullptr, 10);
  return 0;
}

int connect_unix(const fs::path& p) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, p.c_str(), sizeof(a.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int connect_tcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string http_get(uint16_t port) {
  int fd = connect_tcp(port);
  if (fd < 0) return "";
  std::string req = "GET /metrics HTTP/1.0\r\n\r\n";
  (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

double metric(const std::string& text, const std::string& name) {
  for (const auto& l : split_lines(text))
    if (l.rfind(name + " ", 0) == 0) return std::atof(l.c_str() + name.size() + 1);
  return 0;
}

struct AgentStat {
  size_t fds = 0;
  uint64_t rss_kb = 0;
  double cpu_s = 0;
};

AgentStat agent_stat(pid_t pid) {
  AgentStat s;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec))
    ++s.fds;
  if (auto st = read_file("/proc/" + std::to_string(pid) + "/status"))
    for (const auto& l : split_lines(*st))
      if (l.rfind("VmRSS:", 0) == 0) s.rss_kb = std::strtoull(l.c_str() + 6, nullptr, 10);
  if (auto st = read_file("/proc/" + std::to_string(pid) + "/stat")) {
    std::istringstream in(st->substr(st->rfind(')') + 2));
    std::vector<std::string> v;
    std::string f;
    while (in >> f) v.push_back(f);
    if (v.size() > 12) s.cpu_s = (std::stod(v[11]) + std::stod(v[12])) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  return s;
}

bool make_file(const fs::path& p, size_t bytes) {
  std::ofstream out(p, std::ios::binary);
  std::string block(std::min<size_t>(bytes, 1 << 20), 'x');
  for (size_t done = 0; done < bytes; done += block.size())
    out.write(block.data(), std::min(block.size(), bytes - done));
  return static_cast<bool>(out);
}

// A memory cgroup of our own (v1: under our own memcg; v2: under our cgroup when it delegates
// memory) with a small limit, for the OOM storm. Empty when there is none.
struct StormCgroup {
  fs::path dir;
  std::string why;
  bool v2 = false;
};

StormCgroup make_storm_cgroup(const HostPaths& paths, uint64_t limit) {
  StormCgroup c;
  auto h = find_memory_hierarchy(paths);
  if (!h) {
    c.why = h.error().what();
    return c;
  }
  auto own = memory_cgroup_of(paths, *h, 0);
  if (!own) {
    c.why = own.error().what();
    return c;
  }
  c.v2 = h->version == CgroupVersion::v2;
  fs::path d = h->root / (*own == "/" ? "" : own->substr(1)) / ("spark-soak-" + std::to_string(::getpid()));
  std::error_code ec;
  if (!fs::create_directory(d, ec)) {
    c.why = "cannot create " + d.string() + ": " + ec.message();
    return c;
  }
  auto w = write_value(d / (c.v2 ? "memory.max" : "memory.limit_in_bytes"), std::to_string(limit));
  if (!w) {
    c.why = w.error().what();
    ::rmdir(d.c_str());
    return c;
  }
  if (c.v2 && fs::exists(d / "memory.swap.max")) (void)write_value(d / "memory.swap.max", "0");
  c.dir = d;
  return c;
}

// One hog: joins the cgroup, then touches memory until the kernel kills it.
pid_t spawn_hog(const fs::path& cgroup_dir) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  (void)write_value(cgroup_dir / "cgroup.procs", std::to_string(::getpid()));
  std::vector<char*> blocks;
  for (int i = 0; i < 4096; ++i) {
    char* b = static_cast<char*>(std::malloc(1 << 20));
    if (!b) break;
    std::memset(b, i, 1 << 20);
    blocks.push_back(b);
  }
  ::_exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--seconds")
      o.seconds = std::atoi(next().c_str());
    else if (a == "--files")
      o.files = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--windows")
      o.windows = std::atoi(next().c_str());
    else if (a == "--idle")
      o.idle = std::atoi(next().c_str());
    else if (a == "--pollers")
      o.pollers = std::atoi(next().c_str());
    else if (a == "--nice")
      o.nice = std::atoi(next().c_str());
    else if (a == "--dir")
      o.dir = next();
    else if (a == "--spark-tune")
      o.spark_tune = next();
    else {
      std::fprintf(
          stderr,
          "usage: agent_soak [--seconds S] [--files N] [--windows W] [--idle I] [--pollers P] [--nice N] [--dir D] "
          "[--spark-tune PATH]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "agent_soak: run as root (under flock /tmp/spark-tune-kernel.lock)\n");
    return 2;
  }
  if (o.spark_tune.empty()) {
    std::error_code ec;
    o.spark_tune = (fs::read_symlink("/proc/self/exe", ec).parent_path().parent_path() / "agent/spark-tune").string();
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = std::min<rlim_t>(nofile.rlim_max, 8192);
  ::setrlimit(RLIMIT_NOFILE, &nofile);

  // Private run/state dirs: this agent is the bench's alone.
  char tmpl[] = "/tmp/spark-soak-XXXXXX";
  if (!::mkdtemp(tmpl)) return 1;
  fs::path home = tmpl;
  ::setenv("SPARK_TUNE_RUN_DIR", (home / "run").c_str(), 1);
  ::setenv("SPARK_TUNE_STATE_DIR", (home / "state").c_str(), 1);
  HostPaths paths = HostPaths::system();
  fs::path scratch = o.dir / ("spark-soak-" + std::to_string(::getpid()));
  fs::create_directories(scratch / "many");
  fs::create_directories(scratch / "models");
  std::printf(
      "agent_soak: %d s, %d windows, 1 window over %zu files, %d idle control + %d idle /metrics "
      "connections, %d pollers, scratch %s\n",
      o.seconds, o.windows, o.files, o.idle, o.idle, o.pollers, scratch.c_str());
  std::fflush(stdout);
  auto t_files = Clock::now();
  for (size_t i = 0; i < o.files && !g_stop; ++i) make_file(scratch / "many" / ("f" + std::to_string(i)), 4096);
  make_file(scratch / "models/shared.bin", 8 << 20);
  for (int i = 0; i < o.windows; ++i) make_file(scratch / "models" / ("own" + std::to_string(i) + ".bin"), 2 << 20);
  std::printf("  files made in %.1f s\n", std::chrono::duration<double>(Clock::now() - t_files).count());

  auto before = snapshot();
  uint64_t oom_before = vmstat("oom_kill");
  uint16_t metrics_port = free_loopback_port();
  fs::path agent_log = home / "agent.log";
  pid_t agent = ::fork();
  if (agent == 0) {
    int fd = ::open(agent_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    // --nice: the agent's scheduling priority (setpriority), as a unit's Nice= would set it.
    if (o.nice != 0 && ::setpriority(PRIO_PROCESS, 0, o.nice) != 0) std::perror("setpriority");
    std::string port = std::to_string(metrics_port);
    std::vector<std::string> args{o.spark_tune, "agent", "--metrics-port", port};
    std::vector<char*> av;
    for (auto& s : args) av.push_back(s.data());
    av.push_back(nullptr);
    ::execv(av[0], av.data());
    ::_exit(127);
  }
  bool up = false;
  for (int i = 0; i < 1000 && !up; ++i) {
    up = static_cast<bool>(daemon::call(paths, "agent.ping", json::object(), 1s));
    if (!up) std::this_thread::sleep_for(20ms);
  }
  AgentStat idle0 = up ? agent_stat(agent) : AgentStat{};
  std::printf("  agent pid %d up: %s; idle: %zu fds, RSS %.1f MiB\n", agent, up ? "yes" : "NO", idle0.fds,
              static_cast<double>(idle0.rss_kb) / 1024);
  std::fflush(stdout);

  std::mutex mu;
  std::vector<double> lat_ms;
  size_t poll_errors = 0, begin_errors = 0, end_errors = 0, windows_done = 0, metrics_503 = 0;
  AgentStat peak{};
  std::string big_id;
  std::string big_error;
  StormCgroup storm;
  std::atomic<size_t> hogs{0};
  auto stop_at = Clock::now() + std::chrono::seconds(o.seconds);
  auto running = [&] { return !g_stop && Clock::now() < stop_at; };
  std::vector<std::thread> threads;

  // window.list answers that began while the window over N files was being begun.
  std::vector<double> lat_big_ms, ping_ms;
  std::atomic<bool> big_pending{false};
  if (up) {
    // The window over many files, held throughout: begun 2 s into the run, while the pollers
    // poll (its expansion must not hold the agent's loop).
    threads.emplace_back([&] {
      std::this_thread::sleep_for(2s);
      WindowSpec big;
      big.files = {(scratch / "many").string()};
      big.overlay = std::vector<Change>{};
      big.ttl = std::chrono::milliseconds((o.seconds + 120) * 1000);
      auto t_big = Clock::now();
      big_pending = true;
      auto r = daemon::call(paths, "window.begin", spec_to_json(big), 120s);
      big_pending = false;
      std::lock_guard<std::mutex> l(mu);
      if (r)
        big_id = r->value("id", "");
      else
        big_error = r.error().what();
      std::printf("  window over %zu files: %s in %.1f s\n", o.files, r ? big_id.c_str() : big_error.c_str(),
                  std::chrono::duration<double>(Clock::now() - t_big).count());
      std::fflush(stdout);
    });

    // Idle connections.
    std::vector<int> idle_ctl;
    for (int i = 0; i < o.idle; ++i)
      if (int fd = connect_unix(daemon::socket_path(paths)); fd >= 0) idle_ctl.push_back(fd);
    threads.emplace_back([&, idle_ctl] {
      std::vector<int> m;
      while (running()) {
        // /metrics drops an idle connection at its deadline (5 s): keep `idle` open.
        std::erase_if(m, [&](int fd) {
          char c;
          ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
          if (n == 0 || (n < 0 && errno != EAGAIN)) {
            ::close(fd);
            return true;
          }
          if (n > 0) {  // a 503 (over the cap)
            std::lock_guard<std::mutex> l(mu);
            ++metrics_503;
            ::close(fd);
            return true;
          }
          return false;
        });
        while (static_cast<int>(m.size()) < o.idle && running()) {
          int fd = connect_tcp(metrics_port);
          if (fd < 0) break;
          m.push_back(fd);
        }
        std::this_thread::sleep_for(200ms);
      }
      for (int fd : m) ::close(fd);
      for (int fd : idle_ctl) ::close(fd);
    });

    // Windows begun and ended at random.
    for (int w = 0; w < o.windows; ++w)
      threads.emplace_back([&, w] {
        std::mt19937 rng(static_cast<unsigned>(w * 7919 + 1));
        std::uniform_int_distribution<int> hold(200, 4000);
        while (running()) {
          WindowSpec s;
          s.files = {(scratch / "models" / (rng() % 2 ? "shared.bin" : "own" + std::to_string(w) + ".bin")).string()};
          s.ttl = 60s;
          auto b = daemon::call(paths, "window.begin", spec_to_json(s), 30s);
          if (!b) {
            std::lock_guard<std::mutex> l(mu);
            ++begin_errors;
            std::this_thread::sleep_for(500ms);
            continue;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(hold(rng)));
          auto e = daemon::call(paths, "window.end", json{{"id", b->value("id", "")}}, 30s);
          std::lock_guard<std::mutex> l(mu);
          ++windows_done;
          if (!e) ++end_errors;
        }
      });

    // Pollers: window.list back to back, timed at the socket.
    for (int p = 0; p < o.pollers; ++p)
      threads.emplace_back([&] {
        while (running()) {
          auto t0 = Clock::now();
          bool during_big = big_pending;
          auto r = daemon::call(paths, "window.list", json::object(), 10s);
          double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          std::lock_guard<std::mutex> l(mu);
          if (r)
            lat_ms.push_back(ms);
          else
            ++poll_errors;
          if (r && during_big) lat_big_ms.push_back(ms);
        }
      });

    // One more client: agent.ping every 50 ms, timed the same way (the loop's own delay, without
    // building a window.list).
    threads.emplace_back([&] {
      while (running()) {
        auto t0 = Clock::now();
        auto r = daemon::call(paths, "agent.ping", json::object(), 10s);
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        {
          std::lock_guard<std::mutex> l(mu);
          if (r) ping_ms.push_back(ms);
        }
        std::this_thread::sleep_for(50ms);
      }
    });

    // The OOM storm.
    storm = make_storm_cgroup(paths, 32ull << 20);
    if (!storm.dir.empty())
      threads.emplace_back([&] {
        while (running()) {
          pid_t h = spawn_hog(storm.dir);
          if (h > 0) {
            ::waitpid(h, nullptr, 0);
            ++hogs;
          }
          std::this_thread::sleep_for(100ms);
        }
      });
    else
      std::printf("  no OOM storm: %s\n", storm.why.c_str());

    // The sampler.
    while (running()) {
      AgentStat s = agent_stat(agent);
      peak.fds = std::max(peak.fds, s.fds);
      peak.rss_kb = std::max(peak.rss_kb, s.rss_kb);
      std::this_thread::sleep_for(500ms);
    }
  }
  for (auto& t : threads) t.join();
  AgentStat end_stat = up ? agent_stat(agent) : AgentStat{};
  std::string metrics = up ? http_get(metrics_port) : "";

  // Restore: end the big window, then stop the agent (it ends what is left).
  if (!big_id.empty()) (void)daemon::call(paths, "window.end", json{{"id", big_id}}, 120s);
  ::kill(agent, SIGTERM);
  int status = 0;
  for (int i = 0; i < 600 && ::waitpid(agent, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(100ms);
  if (::kill(agent, 0) == 0) {
    ::kill(agent, SIGKILL);
    ::waitpid(agent, &status, 0);
  }
  if (!storm.dir.empty())
    for (int i = 0; i < 50 && ::rmdir(storm.dir.c_str()) != 0; ++i) std::this_thread::sleep_for(100ms);
  uint64_t oom_kernel = vmstat("oom_kill") - oom_before;
  auto after = snapshot();
  std::vector<std::string> differ;
  for (const auto& [k, v] : before)
    if (after.count(k) && after[k] != v) differ.push_back(k + " " + v + " -> " + after[k]);
  fs::remove_all(scratch);

  double oom_events = 0;
  for (const auto& l : split_lines(metrics))
    if (l.rfind("spark_tune_events_total{", 0) == 0 && l.find("type=\"oom_kill\"") != std::string::npos)
      oom_events += std::atof(l.c_str() + l.rfind(' ') + 1);
  double bpf_victims = metric(metrics, "spark_tune_oom_victims_total");
  double dropped =
      metric(metrics, "spark_tune_events_dropped_total") + metric(metrics, "spark_tune_bpf_events_dropped_total");
  double lost = std::max(0.0, static_cast<double>(oom_kernel) - oom_events - dropped);

  std::printf("\n| figure | value |\n| --- | --- |\n");
  std::printf("| window.list answered at the socket | %zu (errors %zu) |\n", lat_ms.size(), poll_errors);
  std::printf("| window.list p50 / p99 / max | %.2f / %.2f / %.2f ms |\n", percentile(lat_ms, 0.5),
              percentile(lat_ms, 0.99), lat_ms.empty() ? 0.0 : *std::max_element(lat_ms.begin(), lat_ms.end()));
  std::printf("| windows begun and ended | %zu (begin errors %zu, end errors %zu) |\n", windows_done, begin_errors,
              end_errors);
  std::printf("| agent.ping every 50 ms: answered, p50 / p99 / max | %zu, %.2f / %.2f / %.2f ms |\n", ping_ms.size(),
              percentile(ping_ms, 0.5), percentile(ping_ms, 0.99),
              ping_ms.empty() ? 0.0 : *std::max_element(ping_ms.begin(), ping_ms.end()));
  std::printf("| window over %zu files | %s |\n", o.files, big_id.empty() ? big_error.c_str() : "held throughout");
  std::printf("| window.list while it was begun: answered, p99 / max | %zu, %.2f / %.2f ms |\n", lat_big_ms.size(),
              percentile(lat_big_ms, 0.99),
              lat_big_ms.empty() ? 0.0 : *std::max_element(lat_big_ms.begin(), lat_big_ms.end()));
  std::printf("| /metrics connections turned away (503) | %zu |\n", metrics_503);
  std::printf("| agent descriptors idle / peak | %zu / %zu |\n", idle0.fds, peak.fds);
  std::printf("| agent RSS idle / peak | %.1f / %.1f MiB |\n", static_cast<double>(idle0.rss_kb) / 1024,
              static_cast<double>(peak.rss_kb) / 1024);
  std::printf("| agent CPU | %.1f s in %d s = %.1f%% of one core |\n", end_stat.cpu_s - idle0.cpu_s, o.seconds,
              (end_stat.cpu_s - idle0.cpu_s) / o.seconds * 100);
  std::printf(
      "| OOM kills: kernel (vmstat) / agent events / BPF victims / dropped | %llu / %.0f / %.0f / %.0f "
      "(hogs run %zu) |\n",
      static_cast<unsigned long long>(oom_kernel), oom_events, bpf_victims, dropped, hogs.load());
  std::printf("| OOM kills lost without being counted as dropped | %.0f |\n", lost);
  std::printf("| agent exit | %s |\n",
              WIFEXITED(status) ? ("status " + std::to_string(WEXITSTATUS(status))).c_str() : "killed");
  std::printf("| every value back (%zu vm sysctls and read_ahead_kb) | %s |\n", before.size(),
              differ.empty() ? "yes" : "NO");
  for (const auto& d : differ) std::printf("  differs: %s\n", d.c_str());
  std::printf("agent log: %s\n", agent_log.c_str());
  bool ok = up && differ.empty() && !big_id.empty() && lost == 0;
  return ok ? 0 : 1;
}
