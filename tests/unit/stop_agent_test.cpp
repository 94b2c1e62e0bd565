// Stopping a running agent from outside (revert --stop-agent, the package's prerm): only the
// process that holds the pid file's lock is signalled; a stale pid file is a dead agent's.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>

#include "daemon/protocol.h"
#include "daemon/stop_agent.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"

namespace spark {
namespace {

// A stand-in agent: locks <run>/agent.pid and writes its pid, as Agent::write_pid_file does,
// then waits. With ignore_term it survives SIGTERM.
pid_t fake_agent(const HostPaths& paths, bool ignore_term) {
  fs::create_directories(paths.run);
  int ready[2];
  if (::pipe(ready) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ready[0]);
    if (ignore_term) ::signal(SIGTERM, SIG_IGN);
    int fd = ::open(daemon::pid_file(paths).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0) ::_exit(3);
    std::string s = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) != 0 || ::write(fd, s.data(), s.size()) != static_cast<ssize_t>(s.size())) ::_exit(4);
    (void)!::write(ready[1], "x", 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  bool ok = ::read(ready[0], &c, 1) == 1;
  ::close(ready[0]);
  return ok ? pid : -1;
}

int wait_status(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  return st;
}

TEST(StopAgentTest, NoPidFileIsNoAgent) {
  test::FixtureRoot root;
  auto r = daemon::stop_agent(root.paths());
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_FALSE(r->has_value());
}

TEST(StopAgentTest, AStalePidFileSignalsNobody) {
  test::FixtureRoot root;
  // A live process whose pid is in the file, but which does not hold the lock: not the agent.
  pid_t bystander = ::fork();
  if (bystander == 0) {
    for (;;) ::pause();
  }
  root.write("run/spark-tune/agent.pid", std::to_string(bystander) + "\n");
  auto r = daemon::stop_agent(root.paths(), std::chrono::milliseconds(200));
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(::kill(bystander, 0), 0) << "the process named by a stale pid file was signalled";
  ::kill(bystander, SIGKILL);
  wait_status(bystander);
}

TEST(StopAgentTest, TheAgentHoldingTheLockGetsSigtermAndIsWaitedFor) {
  test::FixtureRoot root;
  pid_t agent = fake_agent(root.paths(), false);
  ASSERT_GT(agent, 0);
  auto running = daemon::running_agent(root.paths());
  ASSERT_TRUE(running.ok()) << running.error().what();
  ASSERT_TRUE(running->has_value());
  EXPECT_EQ(**running, agent);
  auto r = daemon::stop_agent(root.paths(), std::chrono::seconds(30));
  ASSERT_TRUE(r.ok()) << r.error().what();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(**r, agent);
  int st = wait_status(agent);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) << "status " << st;
}

TEST(StopAgentTest, AnAgentThatDoesNotExitIsATimeout) {
  test::FixtureRoot root;
  pid_t agent = fake_agent(root.paths(), true);
  ASSERT_GT(agent, 0);
  auto r = daemon::stop_agent(root.paths(), std::chrono::milliseconds(300));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), ETIMEDOUT);
  EXPECT_NE(std::string(r.error().what()).find(std::to_string(agent)), std::string::npos) << r.error().what();
  ::kill(agent, SIGKILL);
  wait_status(agent);
}

TEST(StopAgentTest, RevertStopAgentSaysWhatItDid) {
  test::FixtureRoot root;
  root.write("proc/sys/kernel/random/boot_id", "b1\n");
  pid_t agent = fake_agent(root.paths(), false);
  ASSERT_GT(agent, 0);
  auto r = test::run_spark_tune({"--root", root.root().string(), "revert", "--stop-agent"});
  int st = wait_status(agent);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) << "status " << st;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("stopped the agent (pid " + std::to_string(agent) + ")"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nothing to revert"), std::string::npos) << r.out;
}

TEST(StopAgentTest, RevertWithAnUnreadableJournalFailsSayingSoAndKeepsIt) {
  // Power loss mid-write on a file system without ordered data: a journal that is not JSON. revert
  // exits 2 and says so (the prerm goes on and tells the user); the journal is kept for inspection.
  test::FixtureRoot root;
  root.write("proc/sys/kernel/random/boot_id", "b1\n");
  root.write("var/lib/spark-tune/journal.json", "{\"boot_id\": \"b1\", \"targets\": [{\"tar");
  fs::permissions(root.root() / "var/lib/spark-tune", fs::perms::owner_all, fs::perm_options::replace);
  auto r = test::run_spark_tune({"--root", root.root().string(), "revert", "--stop-agent"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("not valid JSON"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(root.root() / "var/lib/spark-tune/journal.json"));
}

}  // namespace
}  // namespace spark
