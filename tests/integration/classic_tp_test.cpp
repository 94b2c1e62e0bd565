// The third program type, classic tracepoints, which need tracefs: in a forked child with a
// private mount namespace, tracefs is mounted at its usual place (seen by that child only), the
// probes are loaded with tp only, and compaction and an OOM kill come through.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/fs.h"
#include "memcg_child.h"
#include "support/fixture.h"
#include "telemetry/mm_probes.h"
#include "tune/trigger.h"

using spark::tune::HostActuator, spark::tune::compact_memory;

using spark::telemetry::MmEvent, spark::telemetry::MmProbeOptions, spark::telemetry::MmProbes,
    spark::telemetry::MmSnapshot, spark::telemetry::ProbeKind, spark::telemetry::ProbeKindPolicy;

namespace spark {
namespace {

using namespace std::chrono_literals;

// Runs in the child: returns "" on success, else what failed. Exit code 77 = skip.
std::string classic_tp_child(int* skip) {
  HostPaths paths = HostPaths::system();
  if (!std::filesystem::exists(paths.tracefs / "events")) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tracefs", paths.tracefs.c_str(), "tracefs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
      *skip = 1;
      return std::string("cannot mount tracefs in a private namespace: ") + std::strerror(errno);
    }
  }
  MmProbeOptions o;
  o.kinds = *ProbeKindPolicy::parse("tp");
  auto p = MmProbes::start(paths, o);
  if (!p.ok()) return std::string("start: ") + p.error().what();
  for (const auto& c : p->choices())
    if (!c.attached || !c.kind || *c.kind != ProbeKind::tp) return c.probe + " not attached as tp: " + c.error;
  auto s0 = p->snapshot();
  HostActuator act(paths);
  if (!compact_memory(act, "test", "provoke compaction").ok()) return "compact_memory write failed";
  auto s1 = p->snapshot();
  if (!s0.ok() || !s1.ok()) return "snapshot failed";
  MmSnapshot d = s1->minus(*s0);
  if (d.counters[MM_C_COMPACT_END] == 0) return "no mm_compaction_end through classic tp";
  uint64_t by_status = 0;
  for (int st = 0; st < 16; ++st) by_status += d.counters.at(MM_C_COMPACT_STATUS + st);
  if (by_status != d.counters[MM_C_COMPACT_END]) return "compaction outcomes do not add up";

  test::MemcgChild cg(paths, "spark-tune-tp-" + std::to_string(::getpid()), 32ull << 20);
  if (!cg.ok()) {
    *skip = 1;
    return cg.why();
  }
  pid_t hog = cg.spawn("spark-tp-hog", [] { test::hog_memory(); });
  if (hog <= 0) return "spawn failed: " + cg.why();
  cg.wait();
  int ooms = 0;
  std::string bad;
  auto deadline = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < deadline) {
    (void)p->poll_events(100ms, [&](const MmEvent& e) {
      // Other tasks on the host may be OOM-killed meanwhile: only the hog counts.
      if (!e.is_oom() || e.raw.pid != static_cast<uint32_t>(hog)) return;
      ++ooms;
      if (e.comm != "spark-tp-hog") bad = "wrong comm " + e.comm;
      if (!(e.raw.flags & MM_EF_MEMCG_UNKNOWN)) bad = "classic tp cannot know the memcg but claims to";
      if (e.raw.rss_anon_kb < 16 * 1024) bad = "rss_anon_kb too small: " + std::to_string(e.raw.rss_anon_kb);
    });
  }
  if (ooms != 1) return "expected one OOM event, got " + std::to_string(ooms);
  return bad;
}

TEST(ClassicTracepoints, ProbesRunAsClassicTp) {
  if (!test::is_root()) GTEST_SKIP() << "needs root";
  if (!std::filesystem::exists("/sys/kernel/btf/vmlinux")) GTEST_SKIP() << "kernel has no BTF";
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    int skip = 0;
    std::string why = classic_tp_child(&skip);
    (void)!::write(pipefd[1], why.data(), why.size());
    ::_exit(skip ? 77 : why.empty() ? 0 : 1);
  }
  ::close(pipefd[1]);
  std::string why;
  char buf[512];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) why.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << why;
  EXPECT_EQ(WEXITSTATUS(status), 0) << why;
}

}  // namespace
}  // namespace spark
