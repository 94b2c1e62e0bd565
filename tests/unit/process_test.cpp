// core/process.h: fork/exec with an argv, output captured, exit status and signal reported.
#include "core/process.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace spark
