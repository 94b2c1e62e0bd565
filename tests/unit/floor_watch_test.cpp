// Issue 14 part 2, event-driven detection: the floor's watch thread (woken by a fake reclaim
// source on an eventfd, by its timer, never by the owner's loop), its hand-over of events to the
// owner's thread, and the pacing of checks as memory falls towards the floor. Fixture tree; the
// meminfo figures come from the test.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "support/fixture.h"
#include "tune/actuator.h"
#include "tune/tuner.h"
#include "window/floor.h"
#include "window/floor_wake.h"
#include "window/window.h"

using spark::state::sysctl_target;

using spark::tune::Change, spark::tune::HostActuator, spark::tune::Tuner;

using spark::window::FloorAsk, spark::window::FloorKeeper, spark::window::FloorSpec, spark::window::FloorWakeSource,
    spark::window::WindowManager, spark::window::WindowSpec, spark::window::floor_from_json,
    spark::window::floor_to_json, spark::window::k_floor_fast_period;

namespace spark {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr uint64_t k_gib = 1ull << 30;
constexpr uint64_t k_mib = 1ull << 20;

// A wake-up source the test fires: an eventfd.
class FakeWake final : public FloorWakeSource {
 public:
  FakeWake() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~FakeWake() override { ::close(fd_); }
  int fd() const override { return fd_; }
  size_t drain() override {
    uint64_t n = 0;
    if (::read(fd_, &n, sizeof n) != sizeof n) return 0;
    drained += n;
    return n;
  }
  std::string name() const override { return "fake reclaim"; }
  void fire() {
    uint64_t one = 1;
    ASSERT_EQ(::write(fd_, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  }
  std::atomic<uint64_t> drained{0};

 private:
  int fd_;
};

struct Watched {
  test::FixtureRoot root;
  HostActuator act{root.paths()};
  Tuner tuner{root.paths(), act};
  std::mutex mu;
  std::vector<Event> events;
  std::vector<std::thread::id> sink_threads;
  std::atomic<uint64_t> free{4 * k_gib};
  std::unique_ptr<FloorKeeper> keeper;

  explicit Watched(std::chrono::milliseconds period) {
    root.meminfo(24 * k_gib / 1024, 16 * k_gib / 1024);
    root.write("model/a.bin", std::string(4096, 'x'));
    FloorSpec s;
    s.free_bytes = k_gib;
    s.hysteresis = 256 * k_mib;
    s.period = period;
    s.grace = 10'000ms;  // step 1 only
    keeper = std::make_unique<FloorKeeper>(
        root.paths(), tuner, "w1", std::vector<fs::path>{root.root() / "model/a.bin"}, 0, s, [this](const Event& e) {
          std::lock_guard<std::mutex> l(mu);
          events.push_back(e);
          sink_threads.push_back(std::this_thread::get_id());
        });
    keeper->set_meminfo_source([this]() -> Result<MemInfo> { return MemInfo::of(24 * k_gib, 8 * k_gib, free.load()); });
  }
  size_t event_count() {
    std::lock_guard<std::mutex> l(mu);
    return events.size();
  }
};

TEST(FloorWatch, AReclaimWakeUpChecksAtOnceAndEventsReachTheOwnersThreadOnly) {
  Watched w(100'000ms);  // the timer would not check again within the test: only the wake-up can
  auto wake = std::make_unique<FakeWake>();
  FakeWake* fake = wake.get();
  ASSERT_TRUE(w.keeper->start_watch(std::move(wake)));
  EXPECT_TRUE(w.keeper->watching());
  // The first check comes at start; then the owner's loop has nothing to tick.
  ASSERT_TRUE(test::eventually([&] { return w.keeper->stats().checks >= 1; }));
  EXPECT_GT(w.keeper->next_check(), Clock::now() + 10min);
  auto j = w.keeper->watch_json();
  EXPECT_EQ(j["thread"], true);
  EXPECT_EQ(j["reclaim_tracepoints"], "fake reclaim");
  EXPECT_FALSE(j.contains("reclaim_fallback"));

  w.free = 300 * k_mib;
  auto fired = Clock::now();
  fake->fire();
  ASSERT_TRUE(test::eventually([&] { return w.keeper->stats().actions[1] == 1; })) << w.keeper->watch_json().dump();
  auto st = w.keeper->stats();
  EXPECT_EQ(st.crossings, 1u);
  EXPECT_GE(st.wakes_reclaim, 1u);
  EXPECT_GE(fake->drained.load(), 1u);
  ASSERT_EQ(st.times.size(), 1u);
  EXPECT_GE(st.times[0].seen, fired);  // the wake-up's check saw the crossing, not a timer's
  EXPECT_LE(st.times[0].seen, st.times[0].begun);
  EXPECT_LE(st.times[0].begun, st.times[0].done);

  // Nothing reached the sink from the watch thread: the events wait for the owner (psi_fd/on_psi).
  EXPECT_EQ(w.event_count(), 0u);
  int fd = w.keeper->psi_fd();
  ASSERT_GE(fd, 0);
  pollfd p{fd, POLLIN | POLLPRI, 0};
  ASSERT_EQ(::poll(&p, 1, 10'000), 1);
  w.keeper->on_psi(Clock::now());
  ASSERT_EQ(w.event_count(), 2u);
  {
    std::lock_guard<std::mutex> l(w.mu);
    EXPECT_EQ(w.events[0].type, "floor_crossed");
    EXPECT_EQ(w.events[1].type, "floor_action");
    EXPECT_EQ(w.events[1].data["action"], "evict");
    for (auto id : w.sink_threads) EXPECT_EQ(id, std::this_thread::get_id());
  }
  auto summary = w.keeper->finish();
  EXPECT_FALSE(w.keeper->watching());
  EXPECT_EQ(summary["watch"]["reclaim_tracepoints"], "fake reclaim");
  EXPECT_GE(summary["watch"]["wakes"]["reclaim"].get<uint64_t>(), 1u);
  EXPECT_EQ(summary["first_begun_us"].size(), 1u);
}

TEST(FloorWatch, WithoutTracepointsTheTimerChecksAndTheFallbackIsSaid) {
  Watched w(5ms);
  ASSERT_TRUE(w.keeper->start_watch(nullptr, "test: the kernel refused the tracepoints"));
  ASSERT_TRUE(test::eventually([&] { return w.keeper->stats().checks >= 5; }));
  auto j = w.keeper->watch_json();
  EXPECT_EQ(j["reclaim_fallback"], "test: the kernel refused the tracepoints");
  EXPECT_FALSE(j.contains("reclaim_tracepoints"));
  EXPECT_GE(j["wakes"]["timer"].get<uint64_t>(), 5u);
  // A crossing is seen by the timer alone and acted on.
  w.free = 200 * k_mib;
  ASSERT_TRUE(test::eventually([&] { return w.keeper->stats().actions[1] == 1; }));
  // finish() stops the thread and hands over what was queued; no check after it.
  auto summary = w.keeper->finish();
  EXPECT_GE(w.event_count(), 2u);
  uint64_t checks = w.keeper->stats().checks;
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(w.keeper->stats().checks, checks);
  EXPECT_EQ(summary["actions"]["evict"], 1);
}

TEST(FloorWatch, StartingTwiceIsRefused) {
  Watched w(50ms);
  ASSERT_TRUE(w.keeper->start_watch(nullptr, "test"));
  auto again = w.keeper->start_watch(nullptr, "test");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code().value(), EALREADY);
}

TEST(FloorPace, ChecksComeSoonerOnlyWhileMemoryFallsTowardsTheFloor) {
  Watched w(10ms);
  FloorKeeper& k = *w.keeper;
  auto t = Clock::now();
  // Steady: the period.
  w.free = 4 * k_gib;
  for (int i = 0; i < 3; ++i) k.tick(t += 10ms);
  EXPECT_EQ(k.next_check(), t + 10ms);
  // Falling 8 MiB a millisecond: far from the floor, still the period...
  uint64_t f = 4 * k_gib;
  k.tick(t += 1ms);
  w.free = f -= 8 * k_mib;
  k.tick(t += 1ms);
  EXPECT_EQ(k.next_check(), t + 10ms);  // 3 GiB away: ~380 ms at this rate
  // ...closer, sooner, and never sooner than the fast period.
  std::chrono::microseconds last = 10ms;
  bool shrank = false;
  while (f > k_gib + 16 * k_mib) {
    w.free = f -= 8 * k_mib;
    k.tick(t += 1ms);
    auto gap = std::chrono::duration_cast<std::chrono::microseconds>(k.next_check() - t);
    EXPECT_GE(gap, k_floor_fast_period);
    EXPECT_LE(gap, 10ms);
    EXPECT_LE(gap, last);
    shrank |= gap < 10ms;
    last = gap;
  }
  EXPECT_TRUE(shrank);
  EXPECT_EQ(last, k_floor_fast_period);
  // Back up (the loader freed memory) and steady again: the pace relaxes to the period.
  w.free = 4 * k_gib;
  for (int i = 0; i < 60; ++i) k.tick(t += 10ms);
  EXPECT_EQ(k.next_check(), t + 10ms);
}

TEST(FloorPace, AFastPeriodNotBelowThePeriodTurnsPacingOff) {
  Watched w(10ms);
  FloorSpec s;
  s.free_bytes = k_gib;
  s.fast_period = 10ms;
  FloorKeeper k(w.root.paths(), w.tuner, "w2", {}, 0, s, nullptr);
  uint64_t f = k_gib + 64 * k_mib;
  k.set_meminfo_source([&]() -> Result<MemInfo> { return MemInfo::of(24 * k_gib, 8 * k_gib, f); });
  auto t = Clock::now();
  for (int i = 0; i < 5; ++i) {
    k.tick(t += 1ms);
    f -= 8 * k_mib;
    EXPECT_EQ(k.next_check(), t + 10ms);
  }
  // And it survives the record (floor_to_json / floor_from_json).
  auto back = floor_from_json(floor_to_json(s));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->fast_period, 10ms);
  EXPECT_EQ(floor_from_json(floor_to_json(FloorSpec{}))->fast_period, k_floor_fast_period);
}

// A window with a floor: its keeper checks on a thread of its own (the agent's loop no longer ticks
// it every 10 ms), window begin's answer names the detection sources (floor.watch), a crossing
// reaches the event log through the loop's poll set, and window_end carries the watch's counts.
TEST(FloorWatch, AWindowsFloorIsWatchedOnItsOwnThreadAndSaysWhichSources) {
  test::FixtureRoot root;
  root.meminfo(24 * 1024 * 1024, 16 * 1024 * 1024);  // free 8 GiB
  root.write("proc/sys/vm/vfs_cache_pressure", "100\n");
  HostActuator act(root.paths());
  Tuner tuner(root.paths(), act);
  WindowManager mgr(root.paths(), tuner);
  std::vector<Event> events;
  mgr.set_event_sink([&](const Event& e) { events.push_back(e); });
  WindowSpec s;
  s.overlay = std::vector<Change>{{sysctl_target("vm.vfs_cache_pressure"), std::string("200"), ""}};
  s.ttl = std::chrono::milliseconds(60'000);
  FloorAsk a;
  a.free = "1G";
  s.floor = a;
  auto w = mgr.begin(s);
  ASSERT_TRUE(w.ok()) << describe(w.error());
  auto d = mgr.describe_window(w->id);
  ASSERT_TRUE(d["floor"].is_object()) << d.dump();
  const auto& watch = d["floor"]["watch"];
  EXPECT_EQ(watch["thread"], true) << watch.dump();
  EXPECT_EQ(watch["period_ms"], 10);
  EXPECT_TRUE(watch.contains("reclaim_tracepoints") || watch.contains("reclaim_fallback")) << watch.dump();
  // The loop's next timer is the TTL's, not a 10 ms floor check.
  auto t = mgr.next_timer();
  ASSERT_TRUE(t.has_value());
  EXPECT_GT(*t, Clock::now() + 30s);
  // Crossed: the watch thread acts; the loop hears of it through its poll set.
  root.meminfo(24 * 1024 * 1024, 1024 * 1024);  // free 512 MiB
  bool crossed = false;
  auto until = Clock::now() + 10s;
  while (!crossed && Clock::now() < until) {
    std::vector<pollfd> fds;
    for (int fd : mgr.poll_fds()) fds.push_back({fd, POLLIN | POLLPRI, 0});
    ASSERT_FALSE(fds.empty());
    if (::poll(fds.data(), fds.size(), 100) > 0)
      for (const auto& p : fds)
        if (p.revents) mgr.on_ready(p.fd, Clock::now());
    for (const auto& e : events) crossed |= e.type == "floor_crossed";
  }
  EXPECT_TRUE(crossed) << "no floor_crossed reached the event log";
  ASSERT_TRUE(mgr.end(w->id, "test"));
  bool ended = false;
  for (const auto& e : events)
    if (e.type == "window_end") {
      ended = true;
      EXPECT_EQ(e.data["floor"]["watch"]["thread"], true) << e.data.dump();
      EXPECT_GE(e.data["floor"]["checks"].get<uint64_t>(), 1u);
    }
  EXPECT_TRUE(ended);
  EXPECT_EQ(root.read("proc/sys/vm/vfs_cache_pressure"), "100");
}

}  // namespace
}  // namespace spark
