// The agent runs ahead of the host's loads (the unit's Nice=-10); what it starts must not: a
// restarted server, a hook, a --on-floor command and a probe or validator (run_process) run at nice
// 0 (core/child_nice.h, through core/process.h's spawn_process), and the thread that started them
// keeps its own priority.
#include "core/child_nice.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "core/fs.h"
#include "core/process.h"
#include "guard/process.h"
#include "support/fixture.h"

namespace spark {
namespace {

using namespace std::chrono_literals;

// The nice value a process reports in /proc/PID/stat (field 19), written by `sh` into `out`.
std::vector<std::string> report_nice(const fs::path& out) {
  return {"/bin/sh", "-c",
          "cut -d' ' -f19 /proc/self/stat > " + out.string() + ".tmp && mv " + out.string() + ".tmp " + out.string()};
}

std::optional<std::string> wait_for(const fs::path& p) {
  std::optional<std::string> v;
  test::eventually(
      [&] {
        if (auto r = read_value(p)) v = *r;
        return v.has_value();
      },
      20s, 10ms);
  return v;
}

// Runs `body` on a thread of its own at nice -5 (Linux: nice is per thread), as the agent's loop
// runs at its unit's Nice=; the thread's nice after body is returned (it must still be -5).
template <class F>
std::optional<int> on_raised_thread(F body, std::string& skip) {
  std::optional<int> after;
  std::thread t([&] {
    if (::setpriority(PRIO_PROCESS, 0, -5) != 0) {
      skip = std::string("cannot raise a thread's priority (setpriority -5: ") + std::strerror(errno) +
             "): needs CAP_SYS_NICE";
      return;
    }
    body();
    errno = 0;
    after = ::getpriority(PRIO_PROCESS, 0);
  });
  t.join();
  return after;
}

TEST(ChildNice, AHookStartedByARaisedThreadRunsAtNiceZero) {
  test::FixtureRoot dir;
  fs::path out = dir.root() / "nice";
  std::string skip;
  pid_t pid = -1;
  auto after = on_raised_thread(
      [&] {
        auto h = guard::spawn_hook(report_nice(out), "{}");
        ASSERT_TRUE(h.ok()) << h.error().what();
        pid = h->pid;
      },
      skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_GT(pid, 0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_EQ(wait_for(out).value_or("none"), "0") << "the hook ran at the agent's priority";
  EXPECT_EQ(after.value_or(99), -5) << "the spawning thread did not get its priority back";
}

TEST(ChildNice, AServerStartedByARaisedThreadRunsAtNiceZero) {
  test::FixtureRoot dir;
  fs::path out = dir.root() / "nice";
  std::string skip;
  pid_t pid = -1;
  auto after = on_raised_thread(
      [&] {
        guard::ServerLaunch launch;
        launch.argv = report_nice(out);
        launch.uid = ::getuid();
        launch.gid = ::getgid();
        auto p = guard::spawn_gated(launch, [](pid_t) -> Result<void> { return {}; });
        ASSERT_TRUE(p.ok()) << p.error().what();
        pid = *p;
      },
      skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_GT(pid, 0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_EQ(wait_for(out).value_or("none"), "0") << "the restarted server ran at the agent's priority";
  EXPECT_EQ(after.value_or(99), -5);
}

TEST(ChildNice, AProgramRunByARaisedThreadRunsAtNiceZero) {
  std::string skip;
  Result<ProcessOutput> r = input_error("not run");
  std::optional<int> seen;
  auto after = on_raised_thread(
      [&] {
        seen = current_nice();
        r = run_process({"cut", "-d", " ", "-f19", "/proc/self/stat"});
      },
      skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  EXPECT_EQ(seen.value_or(99), -5) << "current_nice() does not report the thread's nice";
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(r->out, "0\n") << "a probe or validator ran at the agent's priority";
  EXPECT_EQ(after.value_or(99), -5);
}

TEST(ChildNice, CurrentNiceOfThisThread) {
  errno = 0;
  int n = ::getpriority(PRIO_PROCESS, 0);
  ASSERT_FALSE(n == -1 && errno != 0);
  EXPECT_EQ(current_nice().value_or(99), n);
}

}  // namespace
}  // namespace spark
