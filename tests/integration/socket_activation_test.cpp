// Socket activation for real: systemd-socket-activate holds the agent's socket the way
// spark-tune.socket does (it listens, then on the first connection execs the agent in its own
// process with LISTEN_FDS/LISTEN_PID). The first CLI call is answered by that agent on the
// inherited socket, the agent's peer check still applies, and it exits cleanly leaving the socket
// to its owner. A socket that listens but whose agent is slow to start is waited for, never raced
// by a detached agent; a socket file nobody listens on gets a detached agent. The shipped units
// are checked against what the agent and the CLI expect.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "core/fs.h"
#include "daemon/protocol.h"
#include "state/journal.h"
#include "support/agent_client.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "tune/tuner.h"

using spark::state::read_journal;

using spark::tune::HostActuator, spark::tune::Tuner;

namespace spark {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* k_activator = "/usr/bin/systemd-socket-activate";

struct stat stat_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) st.st_ino = 0;
  return st;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The last `Key=value` of a unit file (later assignments win), nullopt when the key is absent.
std::optional<std::string> unit_value(const std::string& unit, const std::string& key) {
  std::optional<std::string> found;
  for (const auto& line : split_lines(unit))
    if (line.rfind(key + "=", 0) == 0) found = trim(line.substr(key.size() + 1));
  return found;
}

class SocketActivationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::is_root()) GTEST_SKIP() << "needs root (the agent's journal and peer check; a client as uid 65534)";
    dirs = std::make_unique<test::AgentDirs>("spark-activate");
    ASSERT_TRUE(dirs->ok());
    dir = dirs->dir();
    ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);  // uid 65534 reaches the socket below it
    paths = HostPaths::system();
    ASSERT_TRUE(ensure_dir(paths.run, 0755).ok());
    sock = daemon::socket_path(paths);
    log_path = dir / "activator.log";
  }
  void TearDown() override {
    if (activator > 0) {
      ::kill(activator, SIGTERM);
      int st = 0;
      for (int i = 0; i < 1000 && ::waitpid(activator, &st, WNOHANG) == 0; ++i) std::this_thread::sleep_for(10ms);
      if (::waitpid(activator, &st, WNOHANG) == 0) {
        ::kill(activator, SIGKILL);
        ::waitpid(activator, &st, 0);
      }
    }
    // A detached agent a test made (the CLI started it: the pid file names it).
    if (std::string pid = pid_in_file(); !pid.empty())
      for (pid_t p : ours())
        if (std::to_string(p) == pid) stop_detached(p);
    if (!dir.empty()) {
      HostActuator act(paths);
      Tuner tuner(paths, act);
      (void)tuner.revert_all();  // never leave the host tuned
    }
    dirs.reset();
  }

  // Starts systemd-socket-activate listening on the agent's socket; `before` goes in front of
  // the agent's argv (a delayed start). Its stdout and stderr (the agent's too) go to log_path.
  void activate(const std::vector<std::string>& before = {}) {
    std::vector<std::string> args{k_activator, "--listen=" + sock.string(), "-E", "SPARK_TUNE_STATE_DIR",
                                  "-E",        "SPARK_TUNE_RUN_DIR",        "--"};
    args.insert(args.end(), before.begin(), before.end());
    for (const char* a : {SPARK_TUNE_BINARY, "agent", "--metrics-port", "0", "--no-bpf"}) args.push_back(a);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
      int null = ::open("/dev/null", O_RDONLY);
      if (log < 0 || null < 0) ::_exit(126);
      ::dup2(null, 0);
      ::dup2(log, 1);
      ::dup2(log, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    activator = pid;
    for (int i = 0; i < 500 && !fs::exists(sock); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(fs::exists(sock)) << "the activator does not listen: " << log();
  }
  std::string log() { return slurp(log_path); }
  fs::path exe_of(pid_t pid) {
    std::error_code ec;
    return fs::read_symlink(paths.proc / std::to_string(pid) / "exe", ec);
  }
  // Every process running this build's spark-tune binary.
  std::vector<pid_t> ours() {
    std::vector<pid_t> pids;
    fs::path binary = fs::canonical(SPARK_TUNE_BINARY);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(paths.proc, ec)) {
      std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      pid_t pid = static_cast<pid_t>(std::stol(name));
      if (exe_of(pid) == binary) pids.push_back(pid);
    }
    return pids;
  }
  // The sockets listening on `sock` now: their socket inodes, from <proc>/net/unix.
  std::vector<std::string> listening_on_sock() {
    std::vector<std::string> out;
    auto text = read_file(paths.proc / "net/unix");
    if (!text) return out;
    for (const auto& line : split_lines(*text)) {
      std::istringstream in(line);
      std::string num, refs, proto, flags, type, state, inode, path;
      if (!(in >> num >> refs >> proto >> flags >> type >> state >> inode >> path) || path != sock.string()) continue;
      if (std::stoul(flags, nullptr, 16) & 0x10000) out.push_back(inode);  // __SO_ACCEPTCON: listening
    }
    return out;
  }
  // The activator's listening sockets on the path, waited for: the file appears at bind(), before
  // listen(), and under emulation (the Debian 12 guest) the two are far enough apart to be seen.
  std::vector<std::string> activator_listening(std::chrono::milliseconds limit = 10s) {
    std::vector<std::string> held;
    for (auto deadline = Clock::now() + limit;; std::this_thread::sleep_for(10ms)) {
      held.clear();
      for (const auto& inode : listening_on_sock())
        if (holds_socket(activator, inode)) held.push_back(inode);
      if (!held.empty() || Clock::now() >= deadline) return held;
    }
  }
  // Whether `pid` has the socket with this inode open.
  bool holds_socket(pid_t pid, const std::string& inode) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(paths.proc / std::to_string(pid) / "fd", ec)) {
      std::error_code ec2;
      if (fs::read_symlink(e.path(), ec2).string() == "socket:[" + inode + "]") return true;
    }
    return false;
  }
  std::string pid_in_file() {
    auto v = read_value(daemon::pid_file(paths));
    return v ? trim(*v) : std::string();
  }
  void stop_detached(pid_t pid) {
    if (::kill(pid, SIGTERM) != 0) return;
    for (int i = 0; i < 1000 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
  }
  // Waits for the activator's process (the agent, once activated) to exit; its wait status.
  int wait_exit(std::chrono::milliseconds limit) {
    int st = 0;
    auto end = Clock::now() + limit;
    while (Clock::now() < end) {
      if (::waitpid(activator, &st, WNOHANG) == activator) {
        activator = -1;
        return st;
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }

  std::unique_ptr<test::AgentDirs> dirs;
  fs::path dir, sock, log_path;
  HostPaths paths;
  pid_t activator = -1;
};

TEST_F(SocketActivationTest, FirstCliCallIsAnsweredByTheActivatedAgentOnTheInheritedSocket) {
  if (::access(k_activator, X_OK) != 0) GTEST_SKIP() << k_activator << " is not installed (Debian package systemd)";
  activate();
  struct stat before = stat_of(sock);
  ASSERT_NE(before.st_ino, 0u);
  auto listening = activator_listening();
  ASSERT_EQ(listening.size(), 1u) << log();
  EXPECT_EQ(listening_on_sock(), listening) << "a listener on the path that is not the activator's";
  std::this_thread::sleep_for(300ms);
  // Nothing runs until a client connects.
  EXPECT_TRUE(ours().empty()) << "an agent runs before any CLI call";
  EXPECT_EQ(exe_of(activator), fs::canonical(k_activator));
  EXPECT_FALSE(fs::exists(daemon::pid_file(paths)));

  auto listed = test::run_spark_tune({"--json", "window", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err << "\n" << log();
  EXPECT_EQ(trim(listed.out), "[]");
  // The agent that answered is the one the activator execed in its own process: no other started.
  EXPECT_EQ(ours(), std::vector<pid_t>{activator}) << log();
  EXPECT_EQ(exe_of(activator), fs::canonical(SPARK_TUNE_BINARY));
  EXPECT_EQ(pid_in_file(), std::to_string(activator));
  auto ping = daemon::call(paths, "agent.ping", nlohmann::json::object(), 5s);
  ASSERT_TRUE(ping) << ping.error().what();
  EXPECT_EQ(ping->value("pid", 0), activator);
  // On the inherited socket: the one listening socket at the path is still the activator's, now
  // held by the agent; the file was not re-bound, re-moded or re-owned.
  EXPECT_EQ(listening_on_sock(), listening) << "the agent bound a socket of its own";
  EXPECT_TRUE(holds_socket(activator, listening[0]));
  struct stat after = stat_of(sock);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(after.st_mode, before.st_mode);
  EXPECT_EQ(after.st_uid, before.st_uid);
  EXPECT_EQ(after.st_gid, before.st_gid);
  EXPECT_NE(log().find("control socket from systemd: " + sock.string()), std::string::npos) << log();
  EXPECT_EQ(log().find("the activated socket is"), std::string::npos) << log();

  // The peer check is the agent's own: with the socket file open to everyone, uid 65534 connects
  // and is refused by SO_PEERCRED.
  ASSERT_EQ(::chmod(sock.c_str(), 0666), 0);
  std::string as_nobody = test::call_agent_as_nobody(paths, "window.list");
  EXPECT_EQ(as_nobody.rfind(std::to_string(EACCES) + " ", 0), 0u) << as_nobody;
  EXPECT_NE(as_nobody.find("spark-tune"), std::string::npos) << as_nobody;
  EXPECT_NE(log().find("refused a client"), std::string::npos) << log();

  // SIGTERM: a clean exit that leaves nothing of the agent's behind.
  ASSERT_EQ(::kill(activator, SIGTERM), 0);
  int status = wait_exit(10s);
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << log();
  EXPECT_EQ(WEXITSTATUS(status), 0) << log();
  EXPECT_TRUE(ours().empty());
  EXPECT_NE(log().find("agent stopping"), std::string::npos) << log();
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(paths.run)) left.push_back(e.path().filename());
  // The socket file stays: it is its owner's (systemd removes it with RemoveOnStop= and listens on
  // it again after the agent exits; an agent that unlinked it would strand the CLI).
  EXPECT_EQ(left, std::vector<std::string>{"agent.sock"}) << "pid file or other leftovers";
  EXPECT_EQ(stat_of(sock).st_ino, before.st_ino);
  EXPECT_TRUE(listening_on_sock().empty());
  auto journal = read_journal(paths);
  ASSERT_TRUE(journal.ok()) << describe(journal.error());
  EXPECT_TRUE(journal->empty()) << "changes left in the journal";
}

// systemd queues the first connection while it starts the service (up to TimeoutStartSec): the
// CLI must wait for that agent, not give up after a few seconds nor start a detached one beside it.
TEST_F(SocketActivationTest, SlowActivationIsWaitedForNotRacedByADetachedAgent) {
  if (::access(k_activator, X_OK) != 0) GTEST_SKIP() << k_activator << " is not installed (Debian package systemd)";
  // The activated program sleeps 6 s, then execs the agent in the same process (LISTEN_PID holds).
  activate({"/bin/sh", "-c", "sleep 6; exec \"$0\" \"$@\""});
  auto listening = listening_on_sock();
  ASSERT_EQ(listening.size(), 1u);
  auto t0 = Clock::now();
  auto listed = test::run_spark_tune({"--json", "window", "list"});
  auto took = Clock::now() - t0;
  ASSERT_EQ(listed.exit_code, 0) << listed.err << "\n" << log();
  EXPECT_EQ(trim(listed.out), "[]");
  EXPECT_GE(took, 5900ms) << "answered before the activated agent could have";
  EXPECT_EQ(ours(), std::vector<pid_t>{activator}) << "a detached agent was started beside the activated one\n"
                                                   << log();
  EXPECT_EQ(pid_in_file(), std::to_string(activator));
  EXPECT_EQ(listening_on_sock(), listening) << "the socket was taken from the activator";
  EXPECT_TRUE(holds_socket(activator, listening[0]));
  ASSERT_EQ(::kill(activator, SIGTERM), 0);
  int status = wait_exit(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log();
}

// A socket file nobody listens on (a dead agent's, or an activator that is gone): ECONNREFUSED, so
// the CLI starts a detached agent, which replaces the file with a socket of its own (mode 0660)
// and removes it when it exits.
TEST_F(SocketActivationTest, SocketFileNobodyListensOnGetsADetachedAgent) {
  int bound = test::bind_unix_socket(sock, SOCK_STREAM);
  ASSERT_GE(bound, 0);
  ::close(bound);  // the file stays, nobody listens
  EXPECT_TRUE(listening_on_sock().empty());
  auto refused = daemon::call(paths, "agent.ping", nlohmann::json::object(), 1s);
  ASSERT_FALSE(refused);
  ASSERT_EQ(refused.error().code().value(), ECONNREFUSED) << refused.error().what();

  auto listed = test::run_spark_tune({"--json", "window", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(trim(listed.out), "[]");
  auto pids = ours();
  ASSERT_EQ(pids.size(), 1u) << "expected one detached agent";
  EXPECT_EQ(pid_in_file(), std::to_string(pids[0]));
  auto listening = listening_on_sock();
  ASSERT_EQ(listening.size(), 1u) << "the agent does not listen on the socket path";
  EXPECT_TRUE(holds_socket(pids[0], listening[0]));
  EXPECT_EQ(stat_of(sock).st_mode & 07777, 0660u) << "not the agent's own socket";
  stop_detached(pids[0]);
  EXPECT_TRUE(ours().empty());
  EXPECT_FALSE(fs::exists(sock)) << "the agent's own socket is removed at exit";
  EXPECT_FALSE(fs::exists(daemon::pid_file(paths)));
}

// A socket that accepts connections but never answers (a hung agent, a service systemd cannot
// start): ensure_agent reports it after its activation wait and starts no agent of its own, also
// when the listener's queue is full (connect() would otherwise block for ever).
TEST_F(SocketActivationTest, ListenerThatNeverAnswersIsAnErrorNotASecondAgent) {
  // The executable ensure_agent would start is read from <proc>/self/exe: point it at spark-tune
  // (not at this test binary) so that a wrong start would be a real, visible agent.
  HostPaths with_exe = paths;
  with_exe.proc = dir / "proc";
  fs::create_directories(with_exe.proc / "self");
  fs::create_symlink(SPARK_TUNE_BINARY, with_exe.proc / "self/exe");
  for (int backlog : {8, 0}) {
    fs::remove(sock);
    int listener = test::bind_unix_socket(sock, SOCK_STREAM);
    ASSERT_GE(listener, 0);
    ASSERT_EQ(::listen(listener, backlog), 0);
    int queued = -1;
    if (backlog == 0) {  // one connection nobody accepts fills a queue of 0
      queued = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      timeval tv{2, 0};
      ::setsockopt(queued, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
      ASSERT_EQ(::connect(queued, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    }
    auto t0 = Clock::now();
    auto r = daemon::ensure_agent(with_exe, {"--state-dir", paths.state.string()}, 10s, 1500ms);
    auto took = Clock::now() - t0;
    ASSERT_FALSE(r) << "backlog " << backlog;
    EXPECT_EQ(r.error().code().value(), ETIMEDOUT) << r.error().what();
    EXPECT_NE(std::string(r.error().what()).find("accepts connections but no agent answered"), std::string::npos)
        << r.error().what();
    if (backlog == 0) {
      EXPECT_NE(std::string(r.error().what()).find("queue is full"), std::string::npos) << r.error().what();
    }
    EXPECT_GE(took, 1400ms);
    EXPECT_LT(took, 5s);
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(ours().empty()) << "an agent was started beside a listening socket";
    EXPECT_FALSE(fs::exists(daemon::pid_file(paths)));
    if (queued >= 0) ::close(queued);
    ::close(listener);
  }
}

// Issue 11, defect 3: a detached agent (an older CLI's, or one run by hand) runs when the socket
// unit starts. The activated agent must not exit with "an agent is already running" (systemd would
// restart it into its start limit, fail the socket unit and delete the socket file): it asks the
// detached agent to hand over, which stops without ending its window and without removing the
// socket file that is now the unit's; the activated agent resumes the window.
TEST_F(SocketActivationTest, AnActivatedAgentTakesOverFromADetachedOneAndKeepsItsWindows) {
  if (::access(k_activator, X_OK) != 0) GTEST_SKIP() << k_activator << " is not installed (Debian package systemd)";
  auto cur = read_value(paths.proc_sys("vm/vfs_cache_pressure"));
  ASSERT_TRUE(cur.ok());
  std::string mine = std::to_string(std::stoul(trim(*cur)) + 7);
  auto begun = test::run_spark_tune({"window", "begin", "--sysctl", "vm.vfs_cache_pressure=" + mine, "--ttl", "120s"});
  ASSERT_EQ(begun.exit_code, 0) << begun.err;
  auto pids = ours();
  ASSERT_EQ(pids.size(), 1u) << "expected the detached agent the CLI started";
  pid_t detached = pids[0];
  ASSERT_EQ(trim(*read_value(paths.proc_sys("vm/vfs_cache_pressure"))), mine);

  struct stat detached_sock = stat_of(sock);
  activate();  // the socket unit starts: it replaces the file the detached agent served
  // Until the new file is there: between the activator's unlink and its bind the path is absent
  // (st_ino 0), which the Debian 13 guest once caught and took for the unit's socket.
  struct stat unit_sock = stat_of(sock);
  for (int i = 0; i < 500 && (unit_sock.st_ino == detached_sock.st_ino || unit_sock.st_ino == 0); ++i) {
    std::this_thread::sleep_for(10ms);
    unit_sock = stat_of(sock);
  }
  ASSERT_NE(unit_sock.st_ino, detached_sock.st_ino) << "the activator did not bind the path: " << log();
  // The activator's listening socket (the detached one's too shows the path).
  std::vector<std::string> listening = activator_listening();
  ASSERT_EQ(listening.size(), 1u) << log();

  auto listed = test::run_spark_tune({"--json", "window", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err << "\n" << log();
  auto windows = nlohmann::json::parse(listed.out, nullptr, false);
  ASSERT_TRUE(windows.is_array()) << listed.out;
  EXPECT_EQ(windows.size(), 1u) << "the window was not taken over: " << listed.out << "\n" << log();
  // The detached agent handed over and is gone; the one answering is the activated one.
  for (int i = 0; i < 500 && ::kill(detached, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_NE(::kill(detached, 0), 0) << "the detached agent still runs";
  EXPECT_EQ(ours(), std::vector<pid_t>{activator}) << log();
  EXPECT_EQ(pid_in_file(), std::to_string(activator));
  EXPECT_NE(log().find("took over from the detached agent"), std::string::npos) << log();
  // Nothing was put back at the handover: the window's value is still in force.
  EXPECT_EQ(trim(*read_value(paths.proc_sys("vm/vfs_cache_pressure"))), mine);
  // The unit's socket file is untouched (the detached agent removed only its own).
  EXPECT_EQ(stat_of(sock).st_ino, unit_sock.st_ino);
  EXPECT_EQ(listening_on_sock(), listening);

  auto ended = test::run_spark_tune({"window", "end", "--all"});
  EXPECT_EQ(ended.exit_code, 0) << ended.err;
  EXPECT_EQ(trim(*read_value(paths.proc_sys("vm/vfs_cache_pressure"))), trim(*cur));
  ASSERT_EQ(::kill(activator, SIGTERM), 0);
  int status = wait_exit(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << log();
}

// A detached agent never takes the path from a listener that accepts (the unit's socket).
TEST_F(SocketActivationTest, AnAgentByHandDoesNotTakeTheSocketUnitsPath) {
  int listener = test::bind_unix_socket(sock, SOCK_STREAM);
  ASSERT_GE(listener, 0);
  ASSERT_EQ(::listen(listener, 8), 0);
  struct stat before = stat_of(sock);
  // Bounded: an agent that took the path would serve until killed.
  auto r = test::finish(test::spawn_tool({"agent", "--metrics-port", "0", "--no-bpf"}), 10s);
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0) << r.status;
  EXPECT_NE(r.err.find("already accepts connections"), std::string::npos) << r.err;
  EXPECT_EQ(stat_of(sock).st_ino, before.st_ino) << "the agent replaced the listener's socket";
  ::close(listener);
}

// install/spark-tune.socket and .service against what the agent and the CLI expect (systemd-analyze
// verify checks the syntax: tests/integration/units_test.cpp).
TEST(SocketActivationUnits, UnitsMatchWhatTheAgentAndTheCliExpect) {
  fs::path install = (fs::path(SPARK_TUNE_TEST_FIXTURES) / "../../install").lexically_normal();
  std::string socket = slurp(install / "spark-tune.socket");
  std::string service = slurp(install / "spark-tune.service");
  ASSERT_FALSE(socket.empty());
  ASSERT_FALSE(service.empty());
  // The path the CLI connects to on a real host (no SPARK_TUNE_RUN_DIR).
  EXPECT_EQ(unit_value(socket, "ListenStream"), daemon::socket_path(HostPaths{}).string());
  // The listening socket itself goes to the agent (Accept=yes would hand it one connection each).
  EXPECT_NE(unit_value(socket, "Accept").value_or("no"), "yes");
  // The mode and group the agent gives a socket it binds itself, and the group it admits.
  EXPECT_EQ(unit_value(socket, "SocketMode"), "0660");
  EXPECT_EQ(unit_value(socket, "SocketGroup"), daemon::k_group_name);
  EXPECT_NE(slurp(install / "sysusers.d/spark-tune.conf").find(std::string("g ") + daemon::k_group_name),
            std::string::npos)
      << "the socket's group is not created";
  // The socket activates spark-tune.service (the default, same name) running `spark-tune agent`.
  EXPECT_EQ(unit_value(socket, "Service").value_or("spark-tune.service"), "spark-tune.service");
  EXPECT_EQ(unit_value(service, "Sockets").value_or("spark-tune.socket"), "spark-tune.socket");
  auto exec = unit_value(service, "ExecStart");
  ASSERT_TRUE(exec);
  EXPECT_EQ(exec->substr(exec->rfind(' ') + 1), "agent") << *exec;
  EXPECT_EQ(unit_value(service, "Type"), "notify");
  // The CLI waits for an activated agent as long as systemd lets it start.
  EXPECT_EQ(unit_value(service, "TimeoutStartSec"), std::to_string(daemon::k_activation_wait.count()) + "s");
  // Stopping the service must not delete the socket file the socket unit still listens on.
  EXPECT_EQ(unit_value(service, "RuntimeDirectory"), "spark-tune");
  EXPECT_EQ(unit_value(service, "RuntimeDirectoryPreserve"), "yes");
  // The service may use the socket it is given.
  auto families = unit_value(service, "RestrictAddressFamilies");
  ASSERT_TRUE(families);
  EXPECT_NE(families->find("AF_UNIX"), std::string::npos);
}

}  // namespace
}  // namespace spark
