// Issue 14 part 2 on the real kernel, event-driven detection: the reclaim tracepoints wake their
// reader when a memory cgroup of our own reclaims at its limit, and a floor's watch thread (the
// real sources: timer, PSI, tracepoints) acts on a crossing with nobody ticking it: it stops the
// window's process (journaled first) and the window's end continues it.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "core/fs.h"
#include "core/proc_stat.h"
#include "integration/memcg_child.h"
#include "state/journal.h"
#include "support/fixture.h"
#include "telemetry/reclaim_wake.h"
#include "tune/page_cache.h"
#include "tune/tuner.h"
#include "window/floor.h"

using spark::state::read_journal;

using spark::tune::HostActuator, spark::tune::Tuner, spark::tune::evict_file;

using spark::telemetry::ReclaimWake;

using spark::window::FloorKeeper, spark::window::FloorSpec;

namespace spark {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr uint64_t k_mib = 1ull << 20;
constexpr uint64_t k_gib = 1ull << 30;

struct TempDir {
  fs::path dir;
  TempDir() {
    char tmpl[] = "/var/tmp/spark-floor-watch-XXXXXX";
    if (::mkdtemp(tmpl)) dir = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
};

fs::path written_file(const fs::path& dir, uint64_t bytes) {
  fs::path f = dir / "model.bin";
  std::ofstream(f) << std::string(bytes, 'r');
  int fd = ::open(f.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  (void)evict_file(f);
  return f;
}

TEST(ReclaimWakeReal, AMemoryCgroupReclaimingAtItsLimitWakesTheReader) {
  if (!test::is_root()) GTEST_SKIP() << "needs root (BPF, a memory cgroup)";
  auto w = ReclaimWake::open(HostPaths::system());
  if (!w) GTEST_SKIP() << "reclaim tracepoints cannot be attached here: " << describe(w.error());
  auto& wake = **w;
  EXPECT_NE(wake.name().find("memcg_reclaim"), std::string::npos) << wake.name();
  (void)wake.drain();
  TempDir tmp;
  ASSERT_FALSE(tmp.dir.empty());
  fs::path file = written_file(tmp.dir, 64 * k_mib);
  test::MemcgChild cg(HostPaths::system(), "spark-reclaim-wake-" + std::to_string(::getpid()), 16 * k_mib);
  if (!cg.ok()) GTEST_SKIP() << "no memory cgroup child of our own: " << cg.why();
  auto before = wake.counts();
  // Reading 64 MiB through a 16 MiB cgroup: its page cache is reclaimed at the limit, over and over.
  pid_t kid = cg.spawn("spark-reader", [file] {
    int fd = ::open(file.c_str(), O_RDONLY);
    if (fd < 0) ::_exit(3);
    std::vector<char> buf(1 << 20);
    while (::read(fd, buf.data(), buf.size()) > 0) {
    }
    ::_exit(0);
  });
  ASSERT_GT(kid, 0) << cg.why();
  pollfd p{wake.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10'000), 1) << "no wake-up from the reclaim tracepoints in 10 s";
  EXPECT_GT(wake.drain(), 0u);
  (void)cg.wait();
  auto after = wake.counts();
  EXPECT_GT(after.memcg, before.memcg);
  EXPECT_GT(after.sent, before.sent);
  // Bursts are folded: far fewer records than tracepoint hits (at most one a millisecond).
  EXPECT_LE(after.sent - before.sent, after.memcg - before.memcg);
}

TEST(FloorWatchReal, TheWatchThreadStopsTheTreeWithNobodyTickingAndTheEndContinuesIt) {
  if (!test::is_root()) GTEST_SKIP() << "needs root (signals to our cgroup, drop_caches, compact_memory)";
  TempDir tmp;
  ASSERT_FALSE(tmp.dir.empty());
  HostPaths paths = HostPaths::system();
  paths.state = tmp.dir / "state";
  paths.run = tmp.dir / "run";
  HostActuator act(paths);
  Tuner tuner(paths, act);
  test::MemcgChild cg(paths, "spark-floor-watch-" + std::to_string(::getpid()), 256 * k_mib);
  if (!cg.ok()) GTEST_SKIP() << "no memory cgroup child of our own: " << cg.why();
  pid_t kid = cg.spawn("spark-floor-kid", [] {
    for (;;) ::pause();
  });
  ASSERT_GT(kid, 0) << cg.why();
  fs::path file = written_file(tmp.dir, 4 * k_mib);
  // The window's owner state in the journal, as a window has one (the SIGSTOP is journaled there).
  ASSERT_TRUE(tuner.set_owner_state("window:ww", nlohmann::json{{"id", "ww"}}));
  FloorSpec s;
  s.free_bytes = k_gib;
  s.hysteresis = 256 * k_mib;
  s.grace = 20ms;
  s.max_pause = 120s;
  std::atomic<uint64_t> free{4 * k_gib};
  std::vector<Event> events;
  nlohmann::json journal_while_paused;
  {
    FloorKeeper k(paths, tuner, "ww", {file}, kid, s, [&](const Event& e) { events.push_back(e); });
    k.set_meminfo_source([&]() -> Result<MemInfo> { return MemInfo::of(24 * k_gib, 8 * k_gib, free.load()); });
    ASSERT_TRUE(k.start_watch());
    auto j = k.watch_json();
    EXPECT_EQ(j["thread"], true);
    EXPECT_TRUE(j.contains("realtime")) << j.dump();
    EXPECT_TRUE(j.contains("reclaim_tracepoints") || j.contains("reclaim_fallback")) << j.dump();
    free = 300 * k_mib;  // below half the floor: the ladder climbs at each check
    ASSERT_TRUE(test::eventually([&] { return k.paused(); }, 60'000ms)) << k.watch_json().dump();
    // SIGSTOP (no cgroup v2 of its own here) or cgroup.freeze: either way it does not run.
    EXPECT_TRUE(test::eventually([&] {
                  auto s2 = read_proc_stat(paths, kid);
                  return s2 && s2->state == 'T';
                }) ||
                fs::exists(paths.cgroup / "cgroup.controllers"));
    // Journaled while paused: a crashed agent's successor would continue it.
    auto d = read_journal(paths);
    ASSERT_TRUE(d);
    journal_while_paused = d->owners["window:ww"];
    // Events reach the owner through psi_fd/on_psi, or at the end.
    auto summary = k.finish();
    EXPECT_FALSE(k.paused());
    EXPECT_EQ(summary["actions"]["pause"], 1);
    EXPECT_GE(summary["watch"]["wakes"]["timer"].get<uint64_t>(), 1u);
  }
  EXPECT_TRUE(test::eventually([&] {
    auto s2 = read_proc_stat(paths, kid);
    return s2 && s2->state != 'T';
  }));
  bool crossed = false, paused = false;
  for (const auto& e : events) {
    crossed |= e.type == "floor_crossed";
    paused |= e.type == "floor_action" && e.data.value("action", "") == "pause";
  }
  EXPECT_TRUE(crossed);
  EXPECT_TRUE(paused);
  for (const auto& e : events)
    if (e.type == "floor_action" && e.data.value("action", "") == "pause" &&
        e.data.value("detail", "").find("SIGSTOP") != std::string::npos) {
      EXPECT_TRUE(journal_while_paused.contains("floor_stopped")) << journal_while_paused.dump();
    }
  (void)tuner.revert_all();
}

}  // namespace
}  // namespace spark
