// core/process.h: fork/exec with an argv, output captured, exit status and signal reported.
#include "core/process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

namespace spark {
namespace {

TEST(Process, SeparatesStdoutAndStderrAndReportsTheExitCode) {
  auto r = run_process({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
}

TEST(Process, MergesStderrAndPassesExtraEnvironment) {
  ProcessOptions opts;
  opts.merge_stderr = true;
  opts.extra_env = {"SPARK_PROCESS_TEST=hello"};
  auto r = run_process({"sh", "-c", "echo $SPARK_PROCESS_TEST; echo second >&2"}, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out, "hello\nsecond\n");
  EXPECT_TRUE(r->err.empty());
}

TEST(Process, LargeOutputOnBothStreamsDoesNotDeadlock) {
  // 1 MiB on each stream: more than a pipe holds, so both must be drained together.
  auto r = run_process({"sh", "-c", "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out.size(), 1048576u);
  EXPECT_EQ(r->err.size(), 1048576u);
}

TEST(Process, SignalAndMissingProgram) {
  auto killed = run_process({"sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(killed.ok());
  EXPECT_EQ(killed->exit_code, -1);
  EXPECT_EQ(killed->signal, 9);
  auto missing = run_process({"spark-tune-no-such-program"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code().value(), ENOENT);
  EXPECT_FALSE(run_process({}).ok());
}

TEST(Process, StdinIsEmpty) {
  auto r = run_process({"cat"});  // would block forever on an inherited terminal
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_TRUE(r->out.empty());
}

TEST(Process, NoSignalBlockedOrIgnoredInTheChild) {
  // The agent blocks the signals it reads through signalfd and may ignore SIGPIPE: a child must
  // not inherit either.
  Result<ProcessOutput> r = input_error("not run");
  std::thread t([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    struct sigaction ign {
    }, old{};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGUSR2, &ign, &old);
    r = run_process({"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"});
    ::sigaction(SIGUSR2, &old, nullptr);
  });
  t.join();
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(r->out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST(Process, SpawnNamesTheStepThatFailed) {
  SpawnOptions so;
  so.what = "starting true";
  so.cwd = "/nonexistent-spark-tune-dir";
  auto r = spawn_process({"/bin/true"}, so);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), ENOENT);
  EXPECT_NE(std::string(r.error().what()).find("starting true: changing to its directory"), std::string::npos)
      << r.error().what();
}

TEST(Process, SpawnRunsBeforeExecWhileTheChildWaits) {
  SpawnOptions so;
  pid_t seen = -1;
  so.before_exec = [&](pid_t pid) -> Result<void> {
    seen = pid;
    return {};
  };
  auto ok = spawn_process({"/bin/true"}, so);
  ASSERT_TRUE(ok.ok()) << ok.error().what();
  EXPECT_EQ(seen, *ok);
  int status = 0;
  ASSERT_EQ(::waitpid(*ok, &status, 0), *ok);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  so.before_exec = [&](pid_t pid) -> Result<void> {
    seen = pid;
    return sys_error(EPERM, "moving it");
  };
  auto refused = spawn_process({"/bin/true"}, so);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code().value(), EPERM);
  EXPECT_EQ(::waitpid(seen, &status, WNOHANG), -1) << "the refused child was not reaped";
}

}  // namespace
}  // namespace spark
