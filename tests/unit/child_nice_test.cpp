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
#include <fstream>
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

// This process at the agent's unit's OOMScoreAdjust=-900 while it lives, then back (a value of
// this process only; raising it back needs no privilege).
class ShieldedLikeTheAgent {
 public:
  ShieldedLikeTheAgent() {
    before_ = read_value("/proc/self/oom_score_adj").value_or("");
    std::ofstream out("/proc/self/oom_score_adj");
    out << "-900";
    out.flush();
    ok_ = out.good() && read_value("/proc/self/oom_score_adj").value_or("") == "-900";
  }
  ~ShieldedLikeTheAgent() {
    if (!before_.empty()) std::ofstream("/proc/self/oom_score_adj") << before_;
  }
  bool ok() const { return ok_; }

 private:
  std::string before_;
  bool ok_ = false;
};

std::vector<std::string> report_oom_score_adj(const fs::path& out) {
  return {"/bin/sh", "-c",
          "cat /proc/self/oom_score_adj > " + out.string() + ".tmp && mv " + out.string() + ".tmp " + out.string()};
}

TEST(ChildOomScoreAdj, WhatTheAgentStartsIsNotShieldedFromTheOomKillerAsTheAgentIs) {
  ShieldedLikeTheAgent shield;
  if (!shield.ok()) GTEST_SKIP() << "cannot lower this process's oom_score_adj to -900: needs CAP_SYS_RESOURCE";
  // A probe or validator (the clone(CLONE_VM | CLONE_VFORK) path).
  auto r = run_process({"cat", "/proc/self/oom_score_adj"});
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(r->out, "0\n") << "a program the agent ran kept its oom_score_adj -900";
  // A hook.
  test::FixtureRoot dir;
  auto hook = guard::spawn_hook(report_oom_score_adj(dir.root() / "hook"), "{}");
  ASSERT_TRUE(hook.ok()) << hook.error().what();
  ::waitpid(hook->pid, nullptr, 0);
  EXPECT_EQ(wait_for(dir.root() / "hook").value_or("none"), "0") << "a hook kept the agent's -900";
  // The vfork child's write was its own: this process is still at -900.
  EXPECT_EQ(read_value("/proc/self/oom_score_adj").value_or(""), "-900") << "the child's write reached the parent";
}

// The restarted server's value as each original's was; the values above this process's own need no
// privilege, the one below it is tried where this process may lower its own.
void expect_restarts_get(const std::vector<int>& originals) {
  test::FixtureRoot dir;
  for (int original : originals) {
    fs::path out = dir.root() / ("server" + std::to_string(original + 1000));
    guard::ServerLaunch launch;
    launch.argv = report_oom_score_adj(out);
    launch.uid = ::getuid();
    launch.gid = ::getgid();
    launch.oom_score_adj = original;
    auto p = guard::spawn_gated(launch, [](pid_t) -> Result<void> { return {}; });
    ASSERT_TRUE(p.ok()) << p.error().what();
    ::waitpid(*p, nullptr, 0);
    EXPECT_EQ(wait_for(out).value_or("none"), std::to_string(original))
        << "the restarted server did not get the original's oom_score_adj";
  }
}

TEST(ChildOomScoreAdj, ARestartedServerGetsTheValueTheOriginalHad) {
  const std::string own = read_value("/proc/self/oom_score_adj").value_or("");
  ASSERT_EQ(own, "0") << "this test expects to run at oom_score_adj 0";
  expect_restarts_get({300, 700, 0});
  EXPECT_EQ(read_value("/proc/self/oom_score_adj").value_or(""), own);
}

TEST(ChildOomScoreAdj, ARestartedServerGetsAValueBelowTheAgentsOwn) {
  ShieldedLikeTheAgent shield;
  if (!shield.ok())
    GTEST_SKIP() << "values below the agent's (-200 under -900) not tried: lowering this process's "
                    "oom_score_adj needs CAP_SYS_RESOURCE";
  expect_restarts_get({0, -200});
  EXPECT_EQ(read_value("/proc/self/oom_score_adj").value_or(""), "-900");
}

TEST(ChildNice, CurrentNiceOfThisThread) {
  errno = 0;
  int n = ::getpriority(PRIO_PROCESS, 0);
  ASSERT_FALSE(n == -1 && errno != 0);
  EXPECT_EQ(current_nice().value_or(99), n);
}

}  // namespace
}  // namespace spark
