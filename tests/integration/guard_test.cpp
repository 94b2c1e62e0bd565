// Guard on the real kernel (cgroup v1 memory here; cgroup v2 with the memory controller in the
// tests/vm guests): a Python server that grows 64 MiB per request, guarded with a small budget.
// Every cgroup made is a child of this process's own memory cgroup (v2: of the cgroup the tests
// delegate to themselves, memcg_child.h) and is removed at the end; every process started is killed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/fs.h"
#include "daemon/protocol.h"
#include "guard/cgroup.h"
#include "guard/process.h"
#include "guard/supervisor.h"
#include "memcg_child.h"
#include "support/fixture.h"
#include "support/loopback.h"
#include "telemetry/psi.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

using spark::state::read_journal;

using spark::tune::HostActuator, spark::tune::Tuner;

using spark::telemetry::PsiKind, spark::telemetry::PsiTrigger;

namespace spark::guard {
namespace {

using namespace std::chrono_literals;

std::string python() {
  if (::access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  auto p = resolve_executable("python3");
  return p ? *p : std::string();
}

std::string server_script() { return std::string(SPARK_TUNE_TEST_FIXTURES) + "/grow_server.py"; }

pid_t spawn(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> av;
    for (auto& s : argv) av.push_back(const_cast<char*>(s.c_str()));
    av.push_back(nullptr);
    ::execv(av[0], av.data());
    ::_exit(127);
  }
  return pid;
}

// One GET; true when answered.
bool http_get(uint16_t port, const std::string& path) { return !test::http_get(port, path, 5s).empty(); }

bool wait_port(uint16_t port, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  PortAddress a{"127.0.0.1", port};
  while (std::chrono::steady_clock::now() < end) {
    if (port_accepts(a)) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

class GuardKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::is_root()) GTEST_SKIP() << "needs root to make memory cgroups";
    auto h = find_memory_hierarchy(host);
    if (!h) GTEST_SKIP() << "no memory cgroup controller: " << h.error().what();
    hier = *h;
    if (hier.version == CgroupVersion::v2) {
      // The boxes go under a cgroup that enables memory for children; this process moves to a leaf.
      const auto& d = test::v2_delegation(host);
      if (!d.why.empty()) GTEST_SKIP() << d.why;
    }
    auto own = memory_cgroup_of(host, hier, 0);
    ASSERT_TRUE(own.ok());
    own_cgroup = *own;
    box_parent = own_cgroup;
    if (hier.version == CgroupVersion::v2) {
      auto p = v2_box_parent(host, hier, own_cgroup);
      ASSERT_TRUE(p.ok()) << p.error().what();
      box_parent = *p;
    }
    if (::access((box_parent == "/" ? hier.root : hier.root / box_parent.substr(1)).c_str(), W_OK) != 0)
      GTEST_SKIP() << "memory cgroup " << box_parent << " not writable";
    if (python().empty()) GTEST_SKIP() << "python3 missing";
    host.state = state.root() / "state";
    host.run = state.root() / "run";
    act = std::make_unique<HostActuator>(host);
    tuner = std::make_unique<Tuner>(host, *act);
    // spark-tune processes started here talk to an agent of this test only.
    ::setenv("SPARK_TUNE_RUN_DIR", host.run.c_str(), 1);
  }
  void TearDown() override {
    sup.reset();
    if (!tuner) return;
    // spark-tune processes first, so none restarts a server while the guards are ended; an agent
    // a CLI started on demand is detached: its pid file names it.
    for (pid_t p : clis) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
    if (auto pid = read_value(host.run / "agent.pid"); pid.ok() && std::atoi(pid->c_str()) > 1) {
      pid_t a = std::atoi(pid->c_str());
      if (process_comm(host, a).rfind("spark-tune", 0) == 0) ::kill(a, SIGKILL);
    }
    // Whatever a failed test left: end the guards (restores and removes their cgroups), kill our children.
    if (auto gs = list_guards(host); gs.ok())
      for (auto& g : *gs) {
        if (g.owns_box) {
          CgroupBox box(host, hier, g.box);
          if (box.exists()) {
            HostActuator act(host);
            (void)box.kill_all(act);
          }
        }
        (void)end_guard(host, *tuner, g.id);
      }
    for (pid_t p : children) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
    ::unsetenv("SPARK_TUNE_RUN_DIR");
  }
  pid_t start_server(uint16_t port) {
    pid_t p = spawn({python(), server_script(), std::to_string(port)});
    children.push_back(p);
    EXPECT_TRUE(wait_port(port, 10s)) << "server did not come up";
    return p;
  }
  void make_supervisor() {
    sup = std::make_unique<GuardSupervisor>(host, *tuner, [this](const Event& e) {
      std::lock_guard<std::mutex> l(mu);
      events.push_back(e);
      if (std::getenv("GUARD_TEST_VERBOSE")) std::fprintf(stderr, "event %s\n", e.to_line().c_str());
    });
  }
  std::vector<Event> snapshot() {
    std::lock_guard<std::mutex> l(mu);
    return events;
  }
  int index_of(const std::string& type) {
    auto ev = snapshot();
    for (size_t i = 0; i < ev.size(); ++i)
      if (ev[i].type == type) return static_cast<int>(i);
    return -1;
  }
  // Runs the supervisor until the predicate holds or the timeout passes.
  bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      sup->run_once(20ms);
      if (pred()) return true;
    }
    return false;
  }

  test::FixtureRoot state;  // only its temp dir: the journal lives there, not in /var/lib
  HostPaths host = HostPaths::system();
  MemoryHierarchy hier;
  std::string own_cgroup;  // where this process and the servers it starts are
  std::string box_parent;  // where boxes are made: own_cgroup (v1), the delegated cgroup above it (v2)
  // The hard limit: v1 memory.limit_in_bytes, v2 memory.max.
  std::string limit_file() const { return hier.version == CgroupVersion::v1 ? "memory.limit_in_bytes" : "memory.max"; }
  std::unique_ptr<HostActuator> act;
  std::unique_ptr<Tuner> tuner;
  std::unique_ptr<GuardSupervisor> sup;
  std::mutex mu;
  std::vector<Event> events;
  std::vector<pid_t> children;
  std::vector<pid_t> clis;
};

uint64_t rss_of(pid_t pid) { return process_rss(HostPaths::system(), pid); }

TEST_F(GuardKernelTest, WarnsBeforeTheKillKillsOnlyInsideRunsTheHookOnceAndEndsClean) {
  // A bystander holding 128 MiB outside the guard.
  pid_t bystander = spawn({python(), "-c", "import time; x = b'\\x5a' * (128 << 20); time.sleep(120)"});
  children.push_back(bystander);
  uint16_t port = test::free_loopback_port();
  pid_t server = start_server(port);
  // The bystander's 128 MiB: 4 s was not enough under emulation (Debian 13 guest, 8 MiB at 4 s).
  test::eventually([&] { return rss_of(bystander) >= (120u << 20); }, std::chrono::seconds(30 * test::time_scale()),
                   20ms);
  uint64_t bystander_before = rss_of(bystander);
  ASSERT_GT(bystander_before, 120u << 20);

  fs::path hook_out = state.root() / "hook.out";
  make_supervisor();
  GuardOptions o;
  o.pid = server;
  o.budget = "512M";
  o.on_oom = {python(), "-c",
              "import os, sys; open('" + hook_out.string() +
                  "', 'a').write(sys.stdin.read().strip() + ' ' + "
                  "os.environ['SPARK_TUNE_EVENT'] + '\\n')"};
  auto id = sup->add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  const GuardState* st = sup->state(*id);
  ASSERT_NE(st, nullptr);
  CgroupBox box(host, hier, st->box);
  fs::path dir = box.dir();
  EXPECT_TRUE(fs::is_directory(dir));
  EXPECT_EQ(fs::path(st->box).parent_path().string(), box_parent);
  auto procs = box.procs();
  ASSERT_TRUE(procs.ok());
  EXPECT_EQ(*procs, std::vector<pid_t>{server});
  EXPECT_GE(std::stoull(trim(*read_file(box.file(limit_file())))), 512ull << 20);
  EXPECT_LT(std::stoull(trim(*read_file(box.file(limit_file())))), 600ull << 20);

  // 64 MiB every 250 ms (256 MiB/s) until the kernel kills it.
  std::atomic<bool> stop{false};
  std::thread driver([&] {
    while (!stop) {
      http_get(port, "/grow?mb=64");
      std::this_thread::sleep_for(250ms);
    }
  });
  bool killed = run_until([&] { return index_of("guard_end") >= 0 && !sup->active(); }, 60s);
  stop = true;
  driver.join();
  ASSERT_TRUE(killed) << "no OOM kill / guard end within 60 s";
  int warn = index_of("memory_growth"), kill = index_of("oom_kill");
  ASSERT_GE(warn, 0) << "no memory_growth event";
  ASSERT_GE(kill, 0) << "no oom_kill event";
  EXPECT_LT(warn, kill) << "the warning must come before the kill";
  auto ev = snapshot();
  EXPECT_EQ(ev[kill].data["pid"].get<pid_t>(), server);
  EXPECT_EQ(ev[kill].subject, *id);
  int status = 0;
  ASSERT_EQ(::waitpid(server, &status, 0), server);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  // Nothing outside the box was touched.
  EXPECT_EQ(::kill(bystander, 0), 0);
  uint64_t bystander_after = rss_of(bystander);
  EXPECT_GT(bystander_after, bystander_before * 95 / 100);
  // The hook ran exactly once, with the event on stdin and in SPARK_TUNE_EVENT, naming the pid.
  auto out = read_file(hook_out);
  ASSERT_TRUE(out.ok()) << "the hook did not run";
  auto lines = split_lines(trim(*out));
  ASSERT_EQ(lines.size(), 1u) << *out;
  auto sp = lines[0].find("} {");
  ASSERT_NE(sp, std::string::npos);
  auto stdin_ev = nlohmann::json::parse(lines[0].substr(0, sp + 1));
  auto env_ev = nlohmann::json::parse(lines[0].substr(sp + 2));
  EXPECT_EQ(stdin_ev, env_ev);
  EXPECT_EQ(stdin_ev["type"], "oom_kill");
  EXPECT_EQ(stdin_ev["subject"], *id);
  EXPECT_EQ(stdin_ev["data"]["pid"].get<pid_t>(), server);
  // The guard ended with the server: its cgroup is gone and the journal is empty.
  EXPECT_FALSE(fs::exists(dir));
  auto gs = list_guards(host);
  ASSERT_TRUE(gs.ok());
  EXPECT_TRUE(gs->empty());
}

TEST_F(GuardKernelTest, RestartBringsThePortBackWithServerReadyAndEndRemovesTheCgroup) {
  uint16_t port = test::free_loopback_port();
  pid_t server = start_server(port);
  make_supervisor();
  GuardOptions o;
  o.pid = server;
  o.budget = "256M";
  o.restart = true;
  o.restart_max = 3;
  o.restart_backoff = 0ms;
  o.until_port = "127.0.0.1:" + std::to_string(port);
  auto id = sup->add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  std::string box_path = sup->state(*id)->box;
  std::atomic<bool> stop{false};
  std::thread driver([&] {
    while (!stop && index_of("oom_kill") < 0) {
      http_get(port, "/grow?mb=64");
      std::this_thread::sleep_for(100ms);
    }
  });
  bool ready = run_until([&] { return index_of("server_ready") >= 0; }, 60s);
  stop = true;
  driver.join();
  ::waitpid(server, nullptr, 0);
  ASSERT_TRUE(ready) << "no server_ready after the kill";
  EXPECT_LT(index_of("oom_kill"), index_of("server_restart"));
  EXPECT_LT(index_of("server_restart"), index_of("server_ready"));
  pid_t new_pid = sup->state(*id)->pid;
  EXPECT_NE(new_pid, server);
  EXPECT_TRUE(http_get(port, "/")) << "the port is not serving again";
  CgroupBox box(host, hier, box_path);
  auto procs = box.procs();
  ASSERT_TRUE(procs.ok());
  EXPECT_EQ(*procs, std::vector<pid_t>{new_pid}) << "the restarted server runs inside the box";
  auto j = read_journal(host);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->owners[guard_owner(*id)]["pid"].get<pid_t>(), new_pid) << "the new pid is journaled";

  ASSERT_TRUE(sup->end(*id).ok());
  EXPECT_FALSE(box.exists()) << "guard end leaves no cgroup";
  auto back = memory_cgroup_of(host, hier, new_pid);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, own_cgroup) << "the server goes back where it came from";
  ::kill(new_pid, SIGKILL);
  ::waitpid(new_pid, nullptr, 0);
}

TEST_F(GuardKernelTest, RestartLoopStopsAtItsCap) {
  uint16_t port = test::free_loopback_port();
  pid_t server = start_server(port);
  make_supervisor();
  GuardOptions o;
  o.pid = server;
  o.budget = "128M";
  o.restart = true;
  o.restart_max = 2;
  o.restart_backoff = 0ms;
  o.until_port = "127.0.0.1:" + std::to_string(port);
  auto id = sup->add(o);
  ASSERT_TRUE(id.ok()) << id.error().what();
  std::string dir = CgroupBox(host, hier, sup->state(*id)->box).dir();
  std::atomic<bool> stop{false};
  std::thread driver([&] {
    while (!stop) {
      http_get(port, "/grow?mb=64");
      std::this_thread::sleep_for(50ms);
    }
  });
  bool capped = run_until([&] { return index_of("restart_limit") >= 0 && !sup->active(); }, 90s);
  stop = true;
  driver.join();
  ::waitpid(server, nullptr, 0);
  ASSERT_TRUE(capped);
  int restarts = 0;
  for (auto& e : snapshot()) restarts += e.type == "server_restart";
  EXPECT_EQ(restarts, 2);
  EXPECT_FALSE(fs::exists(dir));
}

TEST_F(GuardKernelTest, BadInputIsRefusedAndChangesNothing) {
  make_supervisor();
  auto journal_empty = [&] {
    auto j = read_journal(host);
    return j.ok() && j->empty();
  };
  auto children_of_own = [&] {
    std::set<std::string> s;
    for (auto& e : fs::directory_iterator(box_parent == "/" ? hier.root : hier.root / box_parent.substr(1)))
      if (e.is_directory()) s.insert(e.path().filename());
    return s;
  };
  auto before = children_of_own();
  GuardOptions o;
  o.pid = 999999;  // above pid_max on this machine
  auto r = sup->add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), ESRCH);
  EXPECT_NE(std::string(r.error().what()).find("does not exist"), std::string::npos);

  uint16_t port = test::free_loopback_port();
  pid_t server = start_server(port);
  o.pid = server;
  o.on_oom = {"/nonexistent/hook"};
  r = sup->add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("--on-oom"), std::string::npos);
  o.on_oom = {};
  o.budget = "100T";
  r = sup->add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("above the host's RAM"), std::string::npos);
  o.budget = "";
  o.memory_max = 1 << 20;  // 1 MiB: below the server's RSS
  r = sup->add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("--force"), std::string::npos);
  EXPECT_TRUE(journal_empty());
  EXPECT_EQ(children_of_own(), before);
  EXPECT_EQ(*memory_cgroup_of(host, hier, server), own_cgroup);

  o.memory_max.reset();
  auto ok = sup->add(o);
  ASSERT_TRUE(ok.ok()) << ok.error().what();
  r = sup->add(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("already guarded"), std::string::npos);
  ASSERT_TRUE(sup->end(*ok).ok());
  EXPECT_EQ(children_of_own(), before);
  EXPECT_TRUE(journal_empty());
}

// The CLI in the foreground, killed with -9 while guarding: the kernel keeps enforcing the limit,
// `guard resume` takes the guard over and still restarts the server; `guard end` then cleans up.
pid_t spawn_cli(const std::vector<std::string>& args, const fs::path& out) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(fd, STDOUT_FILENO);
    // stderr too: servers it restarts inherit it and must not hold the test runner's pipe.
    int err = ::open((out.string() + ".err").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(err, STDERR_FILENO);
    std::vector<std::string> all = {SPARK_TUNE_BINARY};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> av;
    for (auto& s : all) av.push_back(const_cast<char*>(s.c_str()));
    av.push_back(nullptr);
    ::execv(av[0], av.data());
    ::_exit(127);
  }
  return pid;
}

int run_cli(const std::vector<std::string>& args, const fs::path& out) {
  pid_t p = spawn_cli(args, out);
  int status = 0;
  ::waitpid(p, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<nlohmann::json> read_events(const fs::path& file) {
  std::vector<nlohmann::json> out;
  auto text = read_file(file);
  if (!text) return out;
  for (const auto& line : split_lines(*text))
    if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line, nullptr, false));
  return out;
}

bool daemon_ping() {
  return daemon::call(HostPaths::system(), "agent.ping", nlohmann::json::object(), std::chrono::milliseconds(500)).ok();
}

bool has_event(const fs::path& file, const std::string& type) {
  for (const auto& e : read_events(file))
    if (e.is_object() && e.value("type", "") == type) return true;
  return false;
}

TEST_F(GuardKernelTest, SurvivesKillDashNineOfTheCliAndResumes) {
  uint16_t port = test::free_loopback_port();
  pid_t server = start_server(port);
  std::string sd = host.state.string();
  fs::path out1 = state.root() / "run1.jsonl", out2 = state.root() / "run2.jsonl";
  pid_t cli =
      spawn_cli({"--state-dir", sd, "guard", "--foreground", "--pid", std::to_string(server), "--budget", "256M",
                 "--restart", "--restart-backoff", "0", "--until-port", "127.0.0.1:" + std::to_string(port)},
                out1);
  clis.push_back(cli);
  std::vector<GuardState> gs;
  for (int i = 0; i < 1000 && (gs.empty() || !has_event(out1, "guard_start")); ++i) {
    std::this_thread::sleep_for(10ms);
    if (auto l = list_guards(host); l.ok() && !l->empty() && l->front().settled) gs = *l;
  }
  ASSERT_EQ(gs.size(), 1u) << "the CLI did not start a guard";
  CgroupBox box(host, hier, gs[0].box);
  ASSERT_TRUE(box.exists());
  ASSERT_TRUE(has_event(out1, "guard_start"));
  ::kill(cli, SIGKILL);
  ::waitpid(cli, nullptr, 0);
  // Still enforced by the kernel with no spark-tune process alive.
  EXPECT_TRUE(box.exists());
  EXPECT_EQ(std::stoull(trim(*read_file(box.file(limit_file())))), gs[0].limit);
  EXPECT_EQ(*box.procs(), std::vector<pid_t>{server});

  pid_t resumed = spawn_cli({"--state-dir", sd, "guard", "resume"}, out2);
  clis.push_back(resumed);
  for (int i = 0; i < 500 && !has_event(out2, "guard_resume"); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(has_event(out2, "guard_resume"));
  for (int i = 0; i < 200 && !has_event(out2, "oom_kill"); ++i) {
    http_get(port, "/grow?mb=64");
    std::this_thread::sleep_for(50ms);
  }
  for (int i = 0; i < 3000 && !has_event(out2, "server_ready"); ++i) std::this_thread::sleep_for(10ms);
  ::waitpid(server, nullptr, 0);
  ASSERT_TRUE(has_event(out2, "oom_kill"))
      << read_file(out2).value_or("") << read_file(out2.string() + ".err").value_or("");
  ASSERT_TRUE(has_event(out2, "server_restart"));
  ASSERT_TRUE(has_event(out2, "server_ready"))
      << "the resumed guard did not bring the server back\n"
      << read_file(out2).value_or("") << read_file(out2.string() + ".err").value_or("");
  EXPECT_TRUE(http_get(port, "/"));
  auto now = list_guards(host);
  ASSERT_TRUE(now.ok() && now->size() == 1u);
  pid_t new_pid = now->front().pid;
  EXPECT_NE(new_pid, server);

  // guard end from another process: exit 0, cgroup gone, and the foreground supervisor exits.
  EXPECT_EQ(run_cli({"--state-dir", sd, "guard", "end", gs[0].id}, state.root() / "end.out"), 0);
  EXPECT_FALSE(box.exists());
  int status = 0;
  pid_t w = 0;
  for (int i = 0; i < 300 && w == 0; ++i) {
    w = ::waitpid(resumed, &status, WNOHANG);
    if (w == 0) std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(w, resumed) << "guard resume did not exit after guard end";
  ::kill(new_pid, SIGKILL);
}

TEST_F(GuardKernelTest, CliRefusesBadInputWithExitTwo) {
  std::string sd = host.state.string();
  fs::path out = state.root() / "bad.out";
  EXPECT_EQ(run_cli({"--state-dir", sd, "guard", "--foreground", "--pid", "999999"}, out), 2);
  uint16_t port = test::free_loopback_port();
  pid_t server = start_server(port);
  EXPECT_EQ(run_cli({"--state-dir", sd, "guard", "--foreground", "--pid", std::to_string(server), "--on-oom",
                     "/nonexistent/hook"},
                    out),
            2);
  EXPECT_EQ(
      run_cli({"--state-dir", sd, "guard", "--foreground", "--pid", std::to_string(server), "--budget", "lots"}, out),
      2);
  EXPECT_EQ(
      run_cli({"--state-dir", sd, "guard", "--foreground", "--pid", std::to_string(server), "--memory-max", "1M"}, out),
      2);
  EXPECT_EQ(
      run_cli({"--state-dir", sd, "guard", "--foreground", "--pid", std::to_string(server), "--until-port", "x"}, out),
      2);
  EXPECT_EQ(run_cli({"--state-dir", sd, "guard", "end", "g9"}, out), 2);
  EXPECT_EQ(*memory_cgroup_of(host, hier, server), own_cgroup);
  auto j = read_journal(host);
  ASSERT_TRUE(j.ok());
  EXPECT_TRUE(j->empty());
}

// The guard in the agent: `guard --pid` hands it over; kill -9 of the agent leaves it enforced;
// the next agent resumes it and still restarts the server; `guard wait server_ready` sees it.
TEST_F(GuardKernelTest, AgentHoldsTheGuardAcrossKillDashNine) {
  uint16_t port = test::free_loopback_port();
  pid_t server = start_server(port);
  std::string sd = host.state.string();
  fs::path log = state.root() / "agent.out";
  auto start_agent = [&] {
    pid_t a = spawn_cli({"--state-dir", sd, "agent"}, log);
    clis.push_back(a);
    for (int i = 0; i < 500; ++i) {
      if (daemon_ping()) return a;
      std::this_thread::sleep_for(10ms);
    }
    return pid_t{-1};
  };
  pid_t agent = start_agent();
  ASSERT_GT(agent, 0) << "the agent did not answer: " << read_file(log.string() + ".err").value_or("");
  fs::path out = state.root() / "guard.out";
  ASSERT_EQ(run_cli({"--state-dir", sd, "--json", "guard", "--pid", std::to_string(server), "--budget", "256M",
                     "--restart", "--restart-backoff", "0", "--until-port", "127.0.0.1:" + std::to_string(port)},
                    out),
            0)
      << read_file(out.string() + ".err").value_or("");
  auto gs = list_guards(host);
  ASSERT_TRUE(gs.ok() && gs->size() == 1u);
  std::string id = gs->front().id;
  CgroupBox box(host, hier, gs->front().box);
  ASSERT_TRUE(box.exists());

  ::kill(agent, SIGKILL);
  ::waitpid(agent, nullptr, 0);
  EXPECT_TRUE(box.exists()) << "still enforced without an agent";
  EXPECT_EQ(std::stoull(trim(*read_file(box.file(limit_file())))), gs->front().limit);
  agent = start_agent();
  ASSERT_GT(agent, 0);

  // Wait for server_ready in the background while the server is driven into the kill, the way a
  // router script does (`events --wait`, which shares `guard wait`'s code).
  fs::path waited = state.root() / "wait.out";
  pid_t waiter =
      spawn_cli({"--state-dir", sd, "events", "--wait", "server_ready", "--guard", id, "--timeout", "60s"}, waited);
  std::this_thread::sleep_for(200ms);
  for (int i = 0; i < 200 && ::waitpid(server, nullptr, WNOHANG) == 0; ++i) {
    http_get(port, "/grow?mb=64");
    std::this_thread::sleep_for(50ms);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(waiter, &status, 0), waiter);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << read_file(waited).value_or("") << read_file(waited.string() + ".err").value_or("");
  auto ev = nlohmann::json::parse(trim(*read_file(waited)));
  EXPECT_EQ(ev["type"], "server_ready");
  EXPECT_EQ(ev["subject"], id);
  EXPECT_EQ(ev["source"], "guard");
  EXPECT_TRUE(http_get(port, "/"));
  auto now = list_guards(host);
  ASSERT_TRUE(now.ok() && now->size() == 1u);
  pid_t new_pid = now->front().pid;
  EXPECT_NE(new_pid, server);
  EXPECT_EQ(*box.procs(), std::vector<pid_t>{new_pid});

  EXPECT_EQ(run_cli({"--state-dir", sd, "guard", "end", id}, state.root() / "end.out"), 0);
  EXPECT_FALSE(box.exists());
  EXPECT_TRUE(list_guards(host)->empty());
  ::kill(new_pid, SIGKILL);
}

// `spark-tune run --budget ... --restart --until-port ... -- SERVER`: the command runs boxed; after
// the kernel kills it, run starts it again (fresh guard, server_ready) until --restart-max.
TEST_F(GuardKernelTest, RunBoxesTheCommandAndRestartsItUntilItsCap) {
  uint16_t port = test::free_loopback_port();
  std::string sd = host.state.string();
  fs::path out = state.root() / "run.out";
  pid_t run = spawn_cli({"--state-dir", sd, "run", "--no-overlay", "--ttl", "60s", "--budget", "256M", "--restart",
                         "--restart-max", "1", "--restart-backoff", "0", "--until-port",
                         "127.0.0.1:" + std::to_string(port), "--", python(), server_script(), std::to_string(port)},
                        out);
  clis.push_back(run);
  auto guards_now = [&] {
    auto l = list_guards(host);
    return l.ok() ? *l : std::vector<GuardState>{};
  };
  auto wait_guard = [&](pid_t not_pid) -> std::optional<GuardState> {
    for (int i = 0; i < 1000; ++i) {
      auto gs = guards_now();
      if (gs.size() == 1 && gs[0].pid != not_pid && gs[0].settled) return gs[0];
      std::this_thread::sleep_for(10ms);
    }
    return std::nullopt;
  };
  auto first = wait_guard(0);
  ASSERT_TRUE(first.has_value()) << read_file(out.string() + ".err").value_or("");
  EXPECT_TRUE(first->settled) << "settled when the port accepted";
  CgroupBox box1(host, hier, first->box);
  auto procs = box1.procs();
  ASSERT_TRUE(procs.ok() && procs->size() == 1u);
  EXPECT_EQ(process_comm(host, procs->front()).rfind("python3", 0), 0u) << "the command itself runs in the box";
  auto drive = [&](const CgroupBox& box) {
    for (int i = 0; i < 60 && box.exists(); ++i) {
      http_get(port, "/grow?mb=64");
      std::this_thread::sleep_for(50ms);
    }
  };
  drive(box1);
  auto second = wait_guard(first->pid);
  ASSERT_TRUE(second.has_value()) << "no fresh guard after the restart: "
                                  << read_file(out.string() + ".err").value_or("");
  EXPECT_FALSE(box1.exists()) << "the first box went with its process";
  EXPECT_NE(second->id, first->id) << "guard ids are not reused";
  EXPECT_TRUE(wait_port(port, 10s));
  drive(
      CgroupBox(host, hier, second->box));  // the second kill: the cap (1 restart) stops the loop and run exits killed
  int status = 0;
  pid_t w = 0;
  for (int i = 0; i < 1000 && w == 0; ++i) {
    w = ::waitpid(run, &status, WNOHANG);
    if (w == 0) std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(w, run) << "run did not stop at its restart cap";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_NE(read_file(out.string() + ".err").value_or("").find("restart loop stopped at its cap"), std::string::npos);
  for (int i = 0; i < 300 && !guards_now().empty(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(guards_now().empty());
  EXPECT_FALSE(CgroupBox(host, hier, second->box).exists());
}

// The PSI trigger the v2 box uses, on this kernel's own pressure file (the v1 box here uses
// vmpressure; cgroup2 without the memory controller still has PSI files).
TEST(GuardPsi, TriggerIsAcceptedByTheKernelAndPollable) {
  if (!test::is_root()) GTEST_SKIP() << "PSI triggers need root";
  HostPaths host = HostPaths::system();
  fs::path f = host.proc / "pressure/memory";
  if (!fs::exists(f)) GTEST_SKIP() << "no PSI on this kernel";
  auto t = PsiTrigger::create(f, PsiKind::some, k_box_psi_stall, k_box_psi_window);
  ASSERT_TRUE(t.ok()) << t.error().what();
  pollfd p{t->fd(), POLLPRI, 0};
  ASSERT_GE(::poll(&p, 1, 0), 0);
  EXPECT_EQ(p.revents & (POLLERR | POLLNVAL), 0);
  EXPECT_FALSE(PsiTrigger::create(f, PsiKind::some, k_box_psi_window * 2, k_box_psi_window).ok())
      << "a stall longer than its window is refused";
}

}  // namespace
}  // namespace spark::guard
