// The agent and the CLI on the real kernel: windows over a loop device survive the CLI, end on
// TTL / exit, are restored after kill -9 of the agent and a restart; peers are authenticated.
#include <gtest/gtest.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "core/fs.h"
#include "daemon/protocol.h"
#include "integration/loop_device.h"
#include "support/fixture.h"
#include "tune/tuner.h"

namespace spark {
namespace {

using namespace std::chrono_literals;

struct Ran {
  int status = -1;  // wait status
  std::string out;
};

// fork/exec of spark-tune with an argv; stdout captured, stderr passed through.
Ran spark_tune(const std::vector<std::string>& args) {
  int p[2];
  if (::pipe(p) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::close(p[0]);
    ::close(p[1]);
    std::vector<std::string> all{SPARK_TUNE_BINARY};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(p[1]);
  Ran r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  ::waitpid(pid, &r.status, 0);
  return r;
}
int exit_code(const Ran& r) { return WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1; }

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::is_root()) GTEST_SKIP() << "needs root";
    loop = std::make_unique<test::LoopFs>(256);
    if (!loop->ok()) GTEST_SKIP() << "no scratch loop filesystem: " << loop->error();
    loop->set_read_ahead_kb("4096");
    char tmpl[] = "/tmp/spark-agent-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
    ::setenv("SPARK_TUNE_STATE_DIR", (dir / "state").c_str(), 1);
    ::setenv("SPARK_TUNE_RUN_DIR", (dir / "run").c_str(), 1);
    paths = HostPaths::system();
    model = loop->mnt() / "model.bin";
    ASSERT_TRUE(test::make_file(model, 4 << 20));
  }
  void TearDown() override {
    stop_agent(SIGTERM);  // ends every window: the host is put back
    if (!dir.empty()) {
      // An agent that could not end something leaves it in the journal: revert it here.
      HostActuator act(paths);
      Tuner tuner(paths, act);
      (void)tuner.revert_all();
    }
    loop.reset();
    ::unsetenv("SPARK_TUNE_STATE_DIR");
    ::unsetenv("SPARK_TUNE_RUN_DIR");
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
  pid_t agent_pid() {
    auto v = read_value(daemon::pid_file(paths));
    return v ? static_cast<pid_t>(std::stol(*v)) : 0;
  }
  void stop_agent(int sig) {
    pid_t pid = agent_pid();
    if (pid <= 0 || ::kill(pid, sig) != 0) return;
    for (int i = 0; i < 300 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
  }
  std::string ra() { return loop->read_ahead_kb(); }
  std::string dev() { return loop->name(); }

  std::unique_ptr<test::LoopFs> loop;
  fs::path dir, model;
  HostPaths paths;
};

TEST_F(AgentTest, WindowOutlivesTheCliAndEndRestores) {
  auto begun = spark_tune({"window", "begin", "--files", model.string(), "--readahead", "16k", "--no-overlay"});
  ASSERT_EQ(exit_code(begun), 0);
  std::string id = trim(begun.out);
  EXPECT_EQ(id.rfind("w", 0), 0u) << begun.out;
  EXPECT_GT(agent_pid(), 0) << "the CLI did not start an agent";
  EXPECT_EQ(ra(), "16");
  auto list = spark_tune({"--json", "window", "list"});
  ASSERT_EQ(exit_code(list), 0);
  auto j = nlohmann::json::parse(list.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], id);
  EXPECT_EQ(j[0]["devices"][0], dev());
  EXPECT_EQ(exit_code(spark_tune({"window", "end", id})), 0);
  EXPECT_EQ(ra(), "4096");
  EXPECT_EQ(exit_code(spark_tune({"window", "end", id})), 2) << "a second end is an error";
}

TEST_F(AgentTest, TtlEndsTheWindowInTheAgent) {
  ASSERT_EQ(exit_code(spark_tune({"window", "begin", "--device", dev(), "--readahead", "16k", "--no-overlay", "--ttl", "400ms"})), 0);
  EXPECT_EQ(ra(), "16");
  for (int i = 0; i < 300 && ra() != "4096"; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(ra(), "4096");
}

TEST_F(AgentTest, WatchedPidDeathEndsTheWindow) {
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_EQ(exit_code(spark_tune({"window", "begin", "--device", dev(), "--readahead", "16k", "--no-overlay", "--pid",
                                  std::to_string(child)})),
            0);
  EXPECT_EQ(ra(), "16");
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  for (int i = 0; i < 300 && ra() != "4096"; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(ra(), "4096");
}

TEST_F(AgentTest, Kill9ThenRestartRestoresAndResumes) {
  auto live = spark_tune({"window", "begin", "--device", dev(), "--readahead", "64k", "--no-overlay", "--ttl", "120s"});
  ASSERT_EQ(exit_code(live), 0);
  ASSERT_EQ(exit_code(spark_tune({"window", "begin", "--device", dev(), "--readahead", "16k", "--no-overlay", "--ttl", "1s"})), 0);
  EXPECT_EQ(ra(), "16");
  stop_agent(SIGKILL);
  EXPECT_EQ(ra(), "16") << "nothing restores without an agent";
  std::this_thread::sleep_for(1200ms);  // the second window's TTL passes while no agent runs
  auto list = spark_tune({"--json", "window", "list"});  // starts a new agent, which recovers
  ASSERT_EQ(exit_code(list), 0);
  auto j = nlohmann::json::parse(list.out);
  ASSERT_EQ(j.size(), 1u) << list.out;
  EXPECT_EQ(j[0]["id"], trim(live.out));
  EXPECT_EQ(ra(), "64") << "the expired window was not ended at start";
  stop_agent(SIGKILL);
  EXPECT_EQ(ra(), "64");
  // The next agent resumes the live window; ending it restores the original value.
  ASSERT_EQ(exit_code(spark_tune({"window", "end", trim(live.out)})), 0);
  EXPECT_EQ(ra(), "4096");
}

TEST_F(AgentTest, RunPassesExitStatusSignalsAndEndsWindow) {
  std::string ra_file = "/sys/block/" + dev() + "/queue/read_ahead_kb";
  auto r = spark_tune({"run", "--device", dev(), "--readahead", "16k", "--no-overlay", "--", "/bin/sh", "-c",
                       "cat " + ra_file + "; exit 7"});
  EXPECT_EQ(exit_code(r), 7);
  EXPECT_EQ(trim(r.out), "16") << "the command did not run inside the window";
  EXPECT_EQ(ra(), "4096");
  auto killed = spark_tune({"run", "--device", dev(), "--readahead", "16k", "--no-overlay", "--", "/bin/sh", "-c", "kill -USR1 $$"});
  EXPECT_TRUE(WIFSIGNALED(killed.status));
  if (WIFSIGNALED(killed.status)) EXPECT_EQ(WTERMSIG(killed.status), SIGUSR1);
  // TTL ends the window while the command keeps running.
  auto ttl = spark_tune({"run", "--device", dev(), "--readahead", "16k", "--no-overlay", "--ttl", "300ms", "--",
                         "/bin/sh", "-c", "cat " + ra_file + "; sleep 1; cat " + ra_file});
  EXPECT_EQ(exit_code(ttl), 0);
  EXPECT_EQ(ttl.out, "16\n4096\n");
  EXPECT_EQ(exit_code(spark_tune({"run", "--no-overlay", "--", "/nonexistent/command"})), 127);
  EXPECT_EQ(exit_code(spark_tune({"run", "--cache", "nope", "--", "true"})), 2);
}

TEST_F(AgentTest, BadInputIsRefusedWithExit2) {
  EXPECT_EQ(exit_code(spark_tune({"window", "begin", "--device", "nosuchdisk9"})), 2);
  EXPECT_EQ(exit_code(spark_tune({"window", "begin", "--files", (loop->mnt() / "nope").string()})), 2);
  EXPECT_EQ(exit_code(spark_tune({"window", "begin", "--ttl", "0"})), 2);
  EXPECT_EQ(exit_code(spark_tune({"window", "begin", "--ttl", "30d"})), 2);
  EXPECT_EQ(exit_code(spark_tune({"window", "end", "w424242"})), 2);
  EXPECT_EQ(exit_code(spark_tune({"window", "end"})), 2);
  EXPECT_EQ(exit_code(spark_tune({"window", "begin", "--device", dev()})), 2) << "--device without --readahead";
  for (const auto& bad : std::vector<std::vector<std::string>>{{"--readahead", "1"},
                                                               {"--readahead", "lots"},
                                                               {"--cache", "sometimes"},
                                                               {"--mapped", "maybe"},
                                                               {"--cache-interval", "1ms"},
                                                               {"--sysctl", "novalue"},
                                                               {"--sysctl", "../etc=1"},
                                                               {"--until-port", "host"},
                                                               {"--no-overlay", "--sysctl", "vm.dirty_ratio=5"}}) {
    std::vector<std::string> args{"window", "begin"};
    args.insert(args.end(), bad.begin(), bad.end());
    EXPECT_EQ(exit_code(spark_tune(args)), 2) << bad[0] << " " << bad.back();
  }
  auto listed = spark_tune({"--json", "window", "list"});
  EXPECT_EQ(trim(listed.out), "[]") << "a refused window was begun";
  EXPECT_EQ(ra(), "4096");
}

// A client as uid 65534: refused by the socket's mode, and by SO_PEERCRED when the mode allows it.
TEST_F(AgentTest, UnauthorizedPeerIsRefused) {
  ASSERT_EQ(exit_code(spark_tune({"window", "list"})), 0);  // an agent runs
  auto try_as_nobody = [&]() -> std::string {
    int p[2];
    EXPECT_EQ(::pipe(p), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(p[0]);
      std::string result;
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
        result = "setuid failed";
      } else {
        auto r = daemon::call(paths, "window.list", nlohmann::json::object(), 2s);
        result = r ? "allowed" : std::to_string(r.error().code().value()) + " " + r.error().what();
      }
      (void)::write(p[1], result.data(), result.size());
      ::_exit(0);
    }
    ::close(p[1]);
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(p[0]);
    ::waitpid(pid, nullptr, 0);
    return out;
  };
  std::string by_mode = try_as_nobody();
  EXPECT_EQ(by_mode.rfind(std::to_string(EACCES) + " ", 0), 0u) << by_mode;
  // Open the socket file to everyone: the agent itself must refuse.
  ASSERT_EQ(::chmod(daemon::socket_path(paths).c_str(), 0666), 0);
  ASSERT_EQ(::chmod(paths.run.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  std::string by_agent = try_as_nobody();
  EXPECT_EQ(by_agent.rfind(std::to_string(EACCES) + " ", 0), 0u) << by_agent;
  EXPECT_NE(by_agent.find("spark-tune"), std::string::npos) << by_agent;
}

// sd_notify: READY=1 only after recovery, then WATCHDOG=1, through our own NOTIFY_SOCKET.
TEST_F(AgentTest, NotifiesReadyAndWatchdog) {
  fs::path sock = dir / "notify.sock";
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("NOTIFY_SOCKET", sock.c_str(), 1);
    ::setenv("WATCHDOG_USEC", "200000", 1);
    std::vector<std::string> all{SPARK_TUNE_BINARY, "agent"};
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  timeval tv{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string all;
  char buf[1024];
  for (int i = 0; i < 10 && all.find("WATCHDOG=1") == std::string::npos; ++i) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
    all += "\n";
  }
  ::close(fd);
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_NE(all.find("READY=1"), std::string::npos) << all;
  EXPECT_NE(all.find("WATCHDOG=1"), std::string::npos) << all;
  EXPECT_LT(all.find("READY=1"), all.find("WATCHDOG=1"));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace spark
