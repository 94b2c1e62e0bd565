// agent_soak (issue 13): one agent under everything at once for a chosen duration --
//   - 50 windows begun and ended at random (a random hold of 0.2-4 s), on one shared file and on
//     files of their own, each with the load-window overlay;
//   - one window over N files (default 30 000) held throughout;
//   - 200 idle connections on the control socket and 200 on /metrics (those past /metrics' cap
//     get 503 and wait a scrape interval, 15 s, before connecting again, as Prometheus retries a
//     failed scrape only at its next interval; the ones dropped at the agent's deadline are opened
//     again at once);
//   - 20 clients polling window.list (the status of the windows) back to back;
//   - a memcg OOM storm: processes that allocate past the limit of a memory cgroup of our own.
// It reports the p50/p99 of window.list answered at the socket (connect, send, full answer; no
// client start-up), the agent's peak descriptors, RSS and CPU, OOM kills (the kernel's counter)
// against what the agent counted (events, plus what it says it dropped), and whether every value
// in /proc/sys/vm and every device's read_ahead_kb was back at the end. Run it under the kernel
// lock. Interrupted (Ctrl-C, SIGTERM) it stops early and restores the same way.
//
// The agent runs at the unit's priority (Nice= in install/spark-tune.service, read from the file so
// bench and package cannot drift; --nice overrides), and so does the ping client: its figure is the
// agent's answer time, not the client's own wait for a CPU. The pollers and everything else stay at
// nice 0 (the load). For the loop's main thread it reports, from schedstat, the time on a CPU and the
// time runnable but waiting for one, over the run and during each ping over 50 ms; --loop-tally
// has the agent write each round of its loop (daemon/loop_tally.h) and reports what was in front
// of those pings.
//
// Usage: agent_soak [--seconds S] [--files N] [--windows W] [--idle I] [--pollers P]
//                   [--nice N] [--unit FILE] [--loop-tally] [--dir SCRATCH] [--spark-tune PATH]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
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

using spark::tune::Change;

using spark::window::WindowSpec, spark::window::spec_to_json;

using namespace spark;
using spark::bench::percentile;
using namespace std::chrono_literals;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// How long an idle /metrics client turned away (503) waits before it connects again: a scrape
// interval (Prometheus tries a failed target again at its next scrape; 15 s is the interval most
// configurations set, its default is 1 min).
constexpr std::chrono::seconds k_scrape_interval{15};

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct Options {
  int seconds = 180;
  size_t files = 30000;
  int windows = 50;
  int idle = 200;
  int pollers = 20;
  std::optional<int> nice;  // nullopt: the unit's Nice=
  fs::path unit = SPARK_TUNE_UNIT_FILE;
  bool loop_tally = false;
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

// Nice= of a systemd unit file (the last one set in [Service]); nullopt: none there.
std::optional<int> unit_nice(const fs::path& unit) {
  auto text = read_file(unit);
  if (!text) return std::nullopt;
  std::optional<int> nice;
  bool service = false;
  for (const auto& raw : split_lines(*text)) {
    std::string l = trim(raw);
    if (!l.empty() && l[0] == '[') service = l == "[Service]";
    if (service && l.rfind("Nice=", 0) == 0) nice = std::atoi(l.c_str() + 5);
  }
  return nice;
}

// A thread's schedstat: time on a CPU and time runnable but waiting for one (ns).
struct SchedStat {
  uint64_t cpu_ns = 0, delay_ns = 0;
};
SchedStat sched_stat(int fd) {
  SchedStat s;
  char buf[128];
  ssize_t n = fd >= 0 ? ::pread(fd, buf, sizeof buf - 1, 0) : -1;
  if (n <= 0) return s;
  buf[n] = 0;
  char* end = nullptr;
  s.cpu_ns = std::strtoull(buf, &end, 10);
  s.delay_ns = std::strtoull(end, nullptr, 10);
  return s;
}

int64_t steady_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// A ping over the target, with what the agent's loop thread and the ping client did meanwhile.
struct SlowPing {
  int64_t t0 = 0, t1 = 0;  // steady ns
  double ms = 0;
  uint64_t loop_cpu_ns = 0, loop_delay_ns = 0, client_delay_ns = 0;
  int64_t connected = 0, sent = 0;  // steady ns: connect() returned, the request written
};

// agent.ping as daemon::call makes it (connect, send, read the answer), with the time of each step.
// Nothing in it allocates: the bench's ~75 threads share malloc's arenas, and a ping that took an
// arena lock a poller (nice 0, waiting for a CPU) held waited for that poller -- the slow pings'
// client sat in futex_wait 47% of their time (kernel stacks sampled during the pings).
struct TimedPing {
  bool ok = false;
  Clock::time_point connected, sent;
};
TimedPing timed_ping(const char* socket, std::string_view request) {
  TimedPing t;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, socket, sizeof(a.sun_path) - 1);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    fd = -1;
  }
  t.connected = Clock::now();
  if (fd < 0) return t;
  bool sent = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size());
  t.sent = Clock::now();
  char buf[4096];
  size_t got = 0;
  while (sent && got < sizeof buf - 1 && !std::memchr(buf, '\n', got)) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10'000) <= 0) break;
    ssize_t n = ::recv(fd, buf + got, sizeof buf - 1 - got, 0);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  buf[got] = 0;
  t.ok = std::strstr(buf, "\"result\"") != nullptr;
  return t;
}

// One round of the agent's loop as SPARK_TUNE_LOOP_TALLY writes it (daemon/loop_tally.h).
struct Round {
  int64_t poll = 0, start = 0, end = 0, cpu = 0, poll_delay = 0, delay = 0;
  std::vector<std::pair<std::string, int64_t>> items;  // label, us
};
std::vector<Round> read_rounds(const fs::path& file) {
  std::vector<Round> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    Round r;
    if (!(l >> r.poll >> r.start >> r.end >> r.cpu >> r.poll_delay >> r.delay)) continue;
    std::string item;
    while (l >> item) {
      auto colon = item.rfind(':');
      if (colon == std::string::npos) continue;
      r.items.emplace_back(item.substr(0, colon), std::atoll(item.c_str() + colon + 1));
    }
    out.push_back(std::move(r));
  }
  return out;
}

int64_t overlap(int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
  return std::max<int64_t>(0, std::min(a1, b1) - std::max(a0, b0));
}

// What the loop did while the slow pings waited, and its items over the whole run.
void report_tally(const std::vector<Round>& rounds, const std::vector<SlowPing>& slow) {
  std::map<std::string, std::vector<double>> all;  // label -> item ms
  for (const auto& r : rounds)
    for (const auto& [label, us] : r.items) all[label].push_back(static_cast<double>(us) / 1000);
  std::printf("\nloop tally: %zu rounds with work; items over the run (count, total, p50 / p99 / max):\n",
              rounds.size());
  std::vector<std::pair<double, std::string>> by_total;
  for (const auto& [label, v] : all) {
    double total = 0;
    for (double x : v) total += x;
    by_total.emplace_back(total, label);
  }
  std::sort(by_total.rbegin(), by_total.rend());
  for (const auto& [total, label] : by_total) {
    const auto& v = all[label];
    std::printf("  %-22s %7zu  %8.1f ms  %7.3f / %7.3f / %8.3f ms\n", label.c_str(), v.size(), total,
                percentile(v, 0.5), percentile(v, 0.99), *std::max_element(v.begin(), v.end()));
  }
  std::vector<double> round_ms;
  for (const auto& r : rounds) round_ms.push_back(static_cast<double>(r.end - r.start) / 1e6);
  std::printf("  round (poll return to done): p50 / p99 / max %.3f / %.3f / %.3f ms\n", percentile(round_ms, 0.5),
              percentile(round_ms, 0.99), round_ms.empty() ? 0.0 : *std::max_element(round_ms.begin(), round_ms.end()));
  if (slow.empty()) return;
  // Each slow ping's interval split: the loop in rounds (on a CPU, waiting for one, the rest), in
  // poll (waiting for a CPU after its wake-up, the rest: asleep), and the labels of the rounds in it.
  double wall = 0, in_round = 0, round_cpu = 0, round_delay = 0, in_poll = 0, poll_delay = 0;
  std::map<std::string, double> front;    // label -> ms in rounds overlapping a slow ping
  std::map<std::string, size_t> largest;  // label -> slow pings it was the largest item of
  for (const auto& p : slow) {
    wall += static_cast<double>(p.t1 - p.t0);
    auto it = std::lower_bound(rounds.begin(), rounds.end(), p.t0, [](const Round& r, int64_t t) { return r.end < t; });
    std::string big;
    int64_t big_us = -1;
    for (; it != rounds.end() && it->poll < p.t1; ++it) {
      int64_t ro = overlap(it->start, it->end, p.t0, p.t1);
      int64_t po = overlap(it->poll, it->start, p.t0, p.t1);
      in_poll += static_cast<double>(po);
      if (it->start - it->poll > 0)
        poll_delay +=
            static_cast<double>(it->poll_delay) * static_cast<double>(po) / static_cast<double>(it->start - it->poll);
      if (ro <= 0) continue;
      double frac = static_cast<double>(ro) / static_cast<double>(std::max<int64_t>(it->end - it->start, 1));
      in_round += static_cast<double>(ro);
      round_cpu += frac * static_cast<double>(it->cpu);
      round_delay += frac * static_cast<double>(it->delay);
      for (const auto& [label, us] : it->items) {
        front[label] += frac * static_cast<double>(us) / 1000;
        if (us > big_us) {
          big_us = us;
          big = label;
        }
      }
    }
    if (!big.empty()) ++largest[big];
  }
  auto pct = [&](double x) { return wall > 0 ? 100 * x / wall : 0.0; };
  std::printf(
      "pings over 50 ms (%zu, %.0f ms in all), where the loop was: in rounds %.0f%% (on a CPU %.0f%%, "
      "runnable waiting for one %.0f%%, other %.0f%%), in poll %.0f%% (woken and waiting for a CPU %.0f%%, "
      "asleep %.0f%%), between %.0f%%\n",
      slow.size(), wall / 1e6, pct(in_round), pct(round_cpu), pct(round_delay), pct(in_round - round_cpu - round_delay),
      pct(in_poll), pct(poll_delay), pct(in_poll - poll_delay), pct(wall - in_round - in_poll));
  std::vector<std::pair<double, std::string>> f;
  for (const auto& [label, ms] : front) f.emplace_back(ms, label);
  std::sort(f.rbegin(), f.rend());
  std::printf("  work in the rounds in front of them (ms, the rounds' share inside each ping):");
  for (size_t i = 0; i < f.size() && i < 10; ++i) std::printf(" %s %.0f;", f[i].second.c_str(), f[i].first);
  std::printf("\n  the largest item in front of each:");
  std::vector<std::pair<size_t, std::string>> l;
  for (const auto& [label, n] : largest) l.emplace_back(n, label);
  std::sort(l.rbegin(), l.rend());
  for (const auto& [n, label] : l) std::printf(" %s %zu;", label.c_str(), n);
  std::printf("\n");
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
    else if (a == "--unit")
      o.unit = next();
    else if (a == "--loop-tally")
      o.loop_tally = true;
    else if (a == "--dir")
      o.dir = next();
    else if (a == "--spark-tune")
      o.spark_tune = next();
    else {
      std::fprintf(stderr,
                   "usage: agent_soak [--seconds S] [--files N] [--windows W] [--idle I] [--pollers P] [--nice N] "
                   "[--unit FILE] [--loop-tally] [--dir D] [--spark-tune PATH]\n");
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
  // The agent's priority: the unit's, unless --nice says otherwise.
  std::optional<int> from_unit = unit_nice(o.unit);
  int nice = o.nice.value_or(from_unit.value_or(0));
  std::string nice_from = o.nice ? "--nice" : from_unit ? o.unit.string() + " Nice=" : "no Nice= in " + o.unit.string();
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
  if (auto la = read_file("/proc/loadavg")) std::printf("  load average at the start: %s", la->c_str());
  std::printf(
      "  the agent and the ping client at nice %d (%s), the other clients at 0: the ping figure is the agent's "
      "answer time at its unit's priority, not the client's wait for a CPU\n",
      nice, nice_from.c_str());
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
  fs::path tally_file = home / "loop-tally.txt";
  pid_t agent = ::fork();
  if (agent == 0) {
    int fd = ::open(agent_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    // A session of its own, and the agent's scheduling priority (setpriority), as systemd starts
    // the unit (Nice=): the agent gives its session's group the same nice (daemon/priority.h).
    ::setsid();
    if (nice != 0 && ::setpriority(PRIO_PROCESS, 0, nice) != 0) std::perror("setpriority");
    if (o.loop_tally) ::setenv("SPARK_TUNE_LOOP_TALLY", tally_file.c_str(), 1);
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
  // The loop's thread is the agent's main thread.
  int loop_sched_fd =
      ::open(("/proc/" + std::to_string(agent) + "/task/" + std::to_string(agent) + "/schedstat").c_str(),
             O_RDONLY | O_CLOEXEC);
  SchedStat loop0 = sched_stat(loop_sched_fd);
  auto t_run0 = Clock::now();
  std::printf("  agent pid %d up: %s; idle: %zu fds, RSS %.1f MiB\n", agent, up ? "yes" : "NO", idle0.fds,
              static_cast<double>(idle0.rss_kb) / 1024);
  std::fflush(stdout);

  std::mutex mu;
  std::vector<double> lat_ms;
  size_t poll_errors = 0, begin_errors = 0, end_errors = 0, windows_done = 0, metrics_503 = 0, metrics_connects = 0;
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
  std::vector<SlowPing> slow_pings;
  struct {
    size_t n = 0;
    double ms = 0, client_wait_ms = 0, loop_cpu_ms = 0, loop_wait_ms = 0;
  } slow_list;
  std::atomic<bool> big_pending{false};
  // The ping client's kernel stack, sampled every 2 ms while a ping has waited over 20 ms: where
  // the slow pings wait when neither the agent's loop nor the client's CPU wait explains them.
  std::atomic<pid_t> ping_tid{0};
  std::atomic<int64_t> ping_since{0};  // steady ns of the ping in flight; 0: none
  std::map<std::string, size_t> ping_stacks;
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
      // Slots turned away (503), each until it may connect again: without this wait each was
      // opened again 200 ms later, and the count of 503s measured how fast the agent's loop
      // accepted (453 to 12 903 in 90 s across builds), not its cap.
      std::deque<Clock::time_point> backoff;
      while (running()) {
        auto now = Clock::now();
        while (!backoff.empty() && backoff.front() <= now) backoff.pop_front();
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
            backoff.push_back(Clock::now() + k_scrape_interval);
            return true;
          }
          return false;
        });
        while (static_cast<int>(m.size() + backoff.size()) < o.idle && running()) {
          int fd = connect_tcp(metrics_port);
          if (fd < 0) break;
          m.push_back(fd);
          std::lock_guard<std::mutex> l(mu);
          ++metrics_connects;
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
        int self_fd = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
        while (running()) {
          SchedStat c0 = sched_stat(self_fd), a0 = sched_stat(loop_sched_fd);
          auto t0 = Clock::now();
          bool during_big = big_pending;
          auto r = daemon::call(paths, "window.list", json::object(), 10s);
          double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          SchedStat c1 = sched_stat(self_fd), a1 = sched_stat(loop_sched_fd);
          std::lock_guard<std::mutex> l(mu);
          if (r)
            lat_ms.push_back(ms);
          else
            ++poll_errors;
          if (r && ms > 50) {
            slow_list.n++;
            slow_list.ms += ms;
            slow_list.client_wait_ms += static_cast<double>(c1.delay_ns - c0.delay_ns) / 1e6;
            slow_list.loop_cpu_ms += static_cast<double>(a1.cpu_ns - a0.cpu_ns) / 1e6;
            slow_list.loop_wait_ms += static_cast<double>(a1.delay_ns - a0.delay_ns) / 1e6;
          }
          if (r && during_big) lat_big_ms.push_back(ms);
        }
      });

    // One more client: agent.ping every 50 ms, timed the same way (the loop's own delay, without
    // building a window.list), at the agent's priority.
    threads.emplace_back([&] {
      pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
      ping_tid = tid;
      const std::string socket = daemon::socket_path(paths).string();
      const std::string request = json{{"id", 1}, {"method", "agent.ping"}, {"params", json::object()}}.dump() + "\n";
      if (nice != 0 && ::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), nice) != 0) std::perror("setpriority");
      int self_fd = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
      while (running()) {
        SchedStat a0 = sched_stat(loop_sched_fd), c0 = sched_stat(self_fd);
        auto t0 = Clock::now();
        ping_since = steady_ns(t0);
        auto r = timed_ping(socket.c_str(), request);
        ping_since = 0;
        auto t1 = Clock::now();
        SchedStat a1 = sched_stat(loop_sched_fd), c1 = sched_stat(self_fd);
        double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
        {
          std::lock_guard<std::mutex> l(mu);
          if (r.ok) ping_ms.push_back(ms);
          if (r.ok && ms > 50)
            slow_pings.push_back({steady_ns(t0), steady_ns(t1), ms, a1.cpu_ns - a0.cpu_ns, a1.delay_ns - a0.delay_ns,
                                  c1.delay_ns - c0.delay_ns, steady_ns(r.connected), steady_ns(r.sent)});
        }
        std::this_thread::sleep_for(50ms);
      }
    });

    threads.emplace_back([&] {
      while (running()) {
        std::this_thread::sleep_for(2ms);
        int64_t since = ping_since;
        if (!since || steady_ns(Clock::now()) - since < 20'000'000 || !ping_tid) continue;
        auto st = read_file("/proc/self/task/" + std::to_string(ping_tid.load()) + "/stack");
        if (!st) continue;
        std::string key;
        int depth = 0;
        for (const auto& l : split_lines(*st)) {
          auto sp = l.find(' ');
          std::string fn = l.substr(sp == std::string::npos ? 0 : sp + 1);
          fn = fn.substr(0, fn.find('+'));
          key += (depth ? "<" : "") + fn;
          if (++depth == 5) break;
        }
        std::lock_guard<std::mutex> l(mu);
        ++ping_stacks[key.empty() ? "(running in user space)" : key];
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
  SchedStat loop1 = sched_stat(loop_sched_fd);
  double run_s = std::chrono::duration<double>(Clock::now() - t_run0).count();
  if (loop_sched_fd >= 0) ::close(loop_sched_fd);
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
  std::printf("| /metrics connections made / turned away (503, each slot then waits %lld s) | %zu / %zu |\n",
              static_cast<long long>(k_scrape_interval.count()), metrics_connects, metrics_503);
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
  {
    double cpu = static_cast<double>(loop1.cpu_ns - loop0.cpu_ns) / 1e9;
    double wait = static_cast<double>(loop1.delay_ns - loop0.delay_ns) / 1e9;
    std::printf(
        "| the loop's thread, of %.1f s: on a CPU / runnable waiting for one / asleep | %.1f / %.1f / %.1f s |\n",
        run_s, cpu, wait, std::max(0.0, run_s - cpu - wait));
    double wall = 0, lcpu = 0, lwait = 0, cwait = 0;
    for (const auto& p : slow_pings) {
      wall += p.ms;
      lcpu += static_cast<double>(p.loop_cpu_ns) / 1e6;
      lwait += static_cast<double>(p.loop_delay_ns) / 1e6;
      cwait += static_cast<double>(p.client_delay_ns) / 1e6;
    }
    auto pct = [&](double x) { return wall > 0 ? 100 * x / wall : 0.0; };
    std::printf(
        "| pings over 50 ms: count; of their time, the loop on a CPU / the loop waiting for one / the ping client "
        "waiting for one | %zu; %.0f%% / %.0f%% / %.0f%% of %.0f ms |\n",
        slow_pings.size(), pct(lcpu), pct(lwait), pct(cwait), wall);
    double in_connect = 0, in_send = 0;
    for (const auto& p : slow_pings) {
      in_connect += static_cast<double>(p.connected - p.t0) / 1e6;
      in_send += static_cast<double>(p.sent - p.connected) / 1e6;
    }
    std::printf(
        "| pings over 50 ms: of their time, in connect() / in send() / waiting for the answer | %.0f%% / %.0f%% / "
        "%.0f%% |\n",
        pct(in_connect), pct(in_send), pct(wall - in_connect - in_send));
  }
  if (slow_list.n > 0)
    std::printf(
        "| window.list over 50 ms: count; of their time, the loop on a CPU / the loop waiting for one / the "
        "polling client (nice 0) waiting for one | %zu; %.0f%% / %.0f%% / %.0f%% of %.0f ms |\n",
        slow_list.n, 100 * slow_list.loop_cpu_ms / slow_list.ms, 100 * slow_list.loop_wait_ms / slow_list.ms,
        100 * slow_list.client_wait_ms / slow_list.ms, slow_list.ms);
  std::printf("| agent and ping client nice | %d (%s) |\n", nice, nice_from.c_str());
  {
    double l1 = 0, l5 = 0, l15 = 0;
    if (auto la = read_file("/proc/loadavg")) std::sscanf(la->c_str(), "%lf %lf %lf", &l1, &l5, &l15);
    std::printf("| load average at the end (1 / 5 / 15 min) | %.2f / %.2f / %.2f |\n", l1, l5, l15);
  }
  if (o.loop_tally) report_tally(read_rounds(tally_file), slow_pings);
  if (!ping_stacks.empty()) {
    std::vector<std::pair<size_t, std::string>> v;
    for (const auto& [k, n] : ping_stacks) v.emplace_back(n, k);
    std::sort(v.rbegin(), v.rend());
    std::printf("\nthe ping client's kernel stack while a ping waited over 20 ms (2 ms samples):\n");
    for (size_t i = 0; i < v.size() && i < 8; ++i) std::printf("  %5zu  %s\n", v[i].first, v[i].second.c_str());
  }
  std::printf("agent log: %s\n", agent_log.c_str());
  bool ok = up && differ.empty() && !big_id.empty() && lost == 0;
  return ok ? 0 : 1;
}
