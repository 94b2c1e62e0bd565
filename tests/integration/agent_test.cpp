// The agent and the CLI on the real kernel: windows over a loop device survive the CLI, end on
// TTL / exit, are restored after kill -9 of the agent and a restart; peers are authenticated.
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "core/fs.h"
#include "core/proc_stat.h"
#include "daemon/protocol.h"
#include "integration/loop_device.h"
#include "support/agent_client.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "tune/tuner.h"

using spark::tune::HostActuator, spark::tune::Tuner;

namespace spark {
namespace {

using namespace std::chrono_literals;

using test::run_spark_tune;  // stdout and stderr captured
int exit_code(const test::ProcessResult& r) { return r.exit_code; }

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::is_root()) GTEST_SKIP() << "needs root";
    loop = std::make_unique<test::LoopFs>(256);
    if (!loop->ok()) GTEST_SKIP() << "no scratch loop filesystem: " << loop->error();
    loop->set_read_ahead_kb("4096");
    dirs = std::make_unique<test::AgentDirs>("spark-agent");
    ASSERT_TRUE(dirs->ok());
    dir = dirs->dir();
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
    dirs.reset();
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
  std::unique_ptr<test::AgentDirs> dirs;
  fs::path dir, model;
  HostPaths paths;
};

TEST_F(AgentTest, WindowOutlivesTheCliAndEndRestores) {
  auto begun = run_spark_tune({"window", "begin", "--files", model.string(), "--readahead", "16k", "--no-overlay"});
  ASSERT_EQ(exit_code(begun), 0);
  std::string id = trim(begun.out);
  EXPECT_EQ(id.rfind("w", 0), 0u) << begun.out;
  EXPECT_GT(agent_pid(), 0) << "the CLI did not start an agent";
  EXPECT_EQ(ra(), "16");
  auto list = run_spark_tune({"--json", "window", "list"});
  ASSERT_EQ(exit_code(list), 0);
  auto j = nlohmann::json::parse(list.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], id);
  EXPECT_EQ(j[0]["devices"][0], dev());
  EXPECT_EQ(exit_code(run_spark_tune({"window", "end", id})), 0);
  EXPECT_EQ(ra(), "4096");
  EXPECT_EQ(exit_code(run_spark_tune({"window", "end", id})), 2) << "a second end is an error";
}

// What the package's prerm runs: `revert --stop-agent` stops the agent, whose windows end and are
// restored, and says which windows ended (the removal says so).
TEST_F(AgentTest, RevertStopAgentNamesTheWindowsThatEnded) {
  auto begun = run_spark_tune({"window", "begin", "--device", dev(), "--readahead", "16k", "--no-overlay", "--ttl",
                               "1h", "--label", "model-load"});
  ASSERT_EQ(exit_code(begun), 0) << begun.err;
  std::string id = trim(begun.out);
  EXPECT_EQ(ra(), "16");
  pid_t pid = agent_pid();
  ASSERT_GT(pid, 0);
  auto rev = run_spark_tune({"revert", "--stop-agent"});
  EXPECT_EQ(exit_code(rev), 0) << rev.out << rev.err;
  EXPECT_NE(rev.out.find("stopped the agent (pid " + std::to_string(pid) + ")"), std::string::npos) << rev.out;
  EXPECT_NE(rev.out.find("load window " + id + " (model-load) ended with the agent"), std::string::npos) << rev.out;
  EXPECT_EQ(ra(), "4096");
  EXPECT_FALSE(process_alive(paths, pid)) << "the agent still runs";
}

TEST_F(AgentTest, TtlEndsTheWindowInTheAgent) {
  ASSERT_EQ(exit_code(run_spark_tune(
                {"window", "begin", "--device", dev(), "--readahead", "16k", "--no-overlay", "--ttl", "400ms"})),
            0);
  EXPECT_EQ(ra(), "16");
  for (int i = 0; i < 300 && ra() != "4096"; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(ra(), "4096");
}

TEST_F(AgentTest, WatchedPidDeathEndsTheWindow) {
  pid_t child = test::fork_paused_child();
  ASSERT_EQ(exit_code(run_spark_tune({"window", "begin", "--device", dev(), "--readahead", "16k", "--no-overlay",
                                      "--pid", std::to_string(child)})),
            0);
  EXPECT_EQ(ra(), "16");
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  for (int i = 0; i < 300 && ra() != "4096"; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(ra(), "4096");
}

TEST_F(AgentTest, Kill9ThenRestartRestoresAndResumes) {
  auto live =
      run_spark_tune({"window", "begin", "--device", dev(), "--readahead", "64k", "--no-overlay", "--ttl", "120s"});
  ASSERT_EQ(exit_code(live), 0);
  ASSERT_EQ(exit_code(run_spark_tune(
                {"window", "begin", "--device", dev(), "--readahead", "16k", "--no-overlay", "--ttl", "1s"})),
            0);
  EXPECT_EQ(ra(), "16");
  stop_agent(SIGKILL);
  EXPECT_EQ(ra(), "16") << "nothing restores without an agent";
  std::this_thread::sleep_for(1200ms);                       // the second window's TTL passes while no agent runs
  auto list = run_spark_tune({"--json", "window", "list"});  // starts a new agent, which recovers
  ASSERT_EQ(exit_code(list), 0);
  auto j = nlohmann::json::parse(list.out);
  ASSERT_EQ(j.size(), 1u) << list.out;
  EXPECT_EQ(j[0]["id"], trim(live.out));
  EXPECT_EQ(ra(), "64") << "the expired window was not ended at start";
  stop_agent(SIGKILL);
  EXPECT_EQ(ra(), "64");
  // The next agent resumes the live window; ending it restores the original value.
  ASSERT_EQ(exit_code(run_spark_tune({"window", "end", trim(live.out)})), 0);
  EXPECT_EQ(ra(), "4096");
}

TEST_F(AgentTest, RunPassesExitStatusSignalsAndEndsWindow) {
  std::string ra_file = "/sys/block/" + dev() + "/queue/read_ahead_kb";
  auto r = run_spark_tune({"run", "--device", dev(), "--readahead", "16k", "--no-overlay", "--", "/bin/sh", "-c",
                           "cat " + ra_file + "; exit 7"});
  EXPECT_EQ(exit_code(r), 7);
  EXPECT_EQ(trim(r.out), "16") << "the command did not run inside the window";
  EXPECT_EQ(ra(), "4096");
  auto killed = run_spark_tune(
      {"run", "--device", dev(), "--readahead", "16k", "--no-overlay", "--", "/bin/sh", "-c", "kill -USR1 $$"});
  EXPECT_EQ(killed.signal, SIGUSR1) << "the command's signal is passed through";
  // TTL ends the window while the command keeps running: the command reads the value once, then
  // waits (up to 60 s) for it to change back. The TTL leaves the command 3 s to start in (the
  // Debian 12 guest under emulation took longer than the 300 ms this test once gave it).
  auto ttl = run_spark_tune({"run", "--device", dev(), "--readahead", "16k", "--no-overlay", "--ttl", "3s", "--",
                             "/bin/sh", "-c",
                             "cat " + ra_file + "; i=0; while [ \"$(cat " + ra_file +
                                 ")\" = 16 ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; cat " + ra_file});
  EXPECT_EQ(exit_code(ttl), 0);
  EXPECT_EQ(ttl.out, "16\n4096\n");
  EXPECT_EQ(exit_code(run_spark_tune({"run", "--no-overlay", "--", "/nonexistent/command"})), 127);
  EXPECT_EQ(exit_code(run_spark_tune({"run", "--cache", "nope", "--", "true"})), 2);
}

TEST_F(AgentTest, BadInputIsRefusedWithExit2) {
  EXPECT_EQ(exit_code(run_spark_tune({"window", "begin", "--device", "nosuchdisk9"})), 2);
  EXPECT_EQ(exit_code(run_spark_tune({"window", "begin", "--files", (loop->mnt() / "nope").string()})), 2);
  EXPECT_EQ(exit_code(run_spark_tune({"window", "begin", "--ttl", "0"})), 2);
  EXPECT_EQ(exit_code(run_spark_tune({"window", "begin", "--ttl", "30d"})), 2);
  EXPECT_EQ(exit_code(run_spark_tune({"window", "end", "w424242"})), 2);
  EXPECT_EQ(exit_code(run_spark_tune({"window", "end"})), 2);
  EXPECT_EQ(exit_code(run_spark_tune({"window", "begin", "--device", dev()})), 2) << "--device without --readahead";
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
    EXPECT_EQ(exit_code(run_spark_tune(args)), 2) << bad[0] << " " << bad.back();
  }
  auto listed = run_spark_tune({"--json", "window", "list"});
  EXPECT_EQ(trim(listed.out), "[]") << "a refused window was begun";
  EXPECT_EQ(ra(), "4096");
}

// A client as uid 65534: refused by the socket's mode, and by SO_PEERCRED when the mode allows it.
TEST_F(AgentTest, UnauthorizedPeerIsRefused) {
  ASSERT_EQ(exit_code(run_spark_tune({"window", "list"})), 0);  // an agent runs
  auto try_as_nobody = [&] { return test::call_agent_as_nobody(paths, "window.list"); };
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
  int fd = test::bind_unix_socket(sock, SOCK_DGRAM);
  ASSERT_GE(fd, 0);
  auto agent = test::spawn_tool({"agent"}, {"NOTIFY_SOCKET=" + sock.string(), "WATCHDOG_USEC=200000"});
  pid_t pid = agent.pid;
  // A condition, not a time: under TCG on Debian 12's 6.1 the agent's start-up (its probes through
  // the verifier) took longer than the 3 s this test once allowed before READY=1.
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string all;
  char buf[1024];
  auto t0 = std::chrono::steady_clock::now();
  while (all.find("WATCHDOG=1") == std::string::npos &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
    all += "\n";
  }
  std::cout << "  READY=1 and WATCHDOG=1 after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()
            << " ms\n";
  ::close(fd);
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(agent.out);
  ::close(agent.err);
  EXPECT_NE(all.find("READY=1"), std::string::npos) << all;
  EXPECT_NE(all.find("WATCHDOG=1"), std::string::npos) << all;
  EXPECT_LT(all.find("READY=1"), all.find("WATCHDOG=1"));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace spark
