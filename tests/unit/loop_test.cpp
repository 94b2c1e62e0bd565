// The one loop contract of the agent's parts (core/loop.h) and its driver.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <chrono>

#include "core/fd.h"
#include "core/loop.h"

namespace spark {
namespace {

using namespace std::chrono_literals;

// A part watching one fd for the events it names, with an optional timer.
struct Part : LoopPart {
  pollfd watch{-1, 0, 0};
  std::optional<LoopClock::time_point> timer;
  int ready = 0, timers = 0;
  std::vector<pollfd> poll_fds() override {
    if (watch.fd < 0) return {};
    return {watch};
  }
  void on_ready(int fd, LoopClock::time_point) override {
    EXPECT_EQ(fd, watch.fd);
    ++ready;
  }
  std::optional<LoopClock::time_point> next_timer() override { return timer; }
  void on_timer(LoopClock::time_point) override {
    ++timers;
    timer.reset();
  }
};

Fd readable_eventfd() {
  Fd fd(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));  // count 1: POLLIN-ready, never POLLPRI
  EXPECT_TRUE(fd.valid());
  return fd;
}

// A PSI trigger or a cgroup v2 events file is always POLLIN-ready; only POLLPRI means an event.
// A loop that polled every part's fds for POLLIN | POLLPRI (the agent did) woke at once, every
// round, for a guard's pressure fd. The driver polls each fd for the events its part names.
TEST(Loop, PollsEachFdForTheEventsItsPartNames) {
  Fd fd = readable_eventfd();
  Part pri;
  pri.watch = {fd.get(), POLLPRI, 0};
  std::array<LoopPart*, 1> parts{&pri};
  auto t0 = LoopClock::now();
  ASSERT_TRUE(run_loop_once(parts, 50ms).ok());
  EXPECT_EQ(pri.ready, 0) << "an fd watched for POLLPRI was reported ready for POLLIN";
  EXPECT_GE(LoopClock::now() - t0, 45ms) << "the poll woke for an event its part did not ask for";

  Part in;
  in.watch = {fd.get(), POLLIN, 0};
  std::array<LoopPart*, 2> both{&pri, &in};
  ASSERT_TRUE(run_loop_once(both, 5s).ok());
  EXPECT_EQ(in.ready, 1);
  EXPECT_EQ(pri.ready, 0);
}

TEST(Loop, WaitsNoLongerThanTheEarliestTimerAndRunsItWhenDue) {
  Part idle, soon;
  soon.timer = LoopClock::now() + 20ms;
  std::array<LoopPart*, 2> parts{&idle, &soon};
  auto t0 = LoopClock::now();
  ASSERT_TRUE(run_loop_once(parts, 10s).ok());
  auto took = LoopClock::now() - t0;
  EXPECT_EQ(soon.timers, 1);
  EXPECT_EQ(idle.timers, 0);
  EXPECT_GE(took, 19ms);
  EXPECT_LT(took, 5s) << "the loop slept past its part's timer";
  // A timer not yet due is not run: the round ends at max_wait.
  soon.timer = LoopClock::now() + 10s;
  ASSERT_TRUE(run_loop_once(parts, 10ms).ok());
  EXPECT_EQ(soon.timers, 1);
}

TEST(Loop, PollTimeoutRoundsUpAndCaps) {
  auto now = LoopClock::now();
  EXPECT_EQ(poll_timeout_ms(std::nullopt, now), -1);
  EXPECT_EQ(poll_timeout_ms(std::nullopt, now, 30ms), 30);
  EXPECT_EQ(poll_timeout_ms(now + 100us, now), 1) << "a timer under 1 ms away read as 0 spins";
  EXPECT_EQ(poll_timeout_ms(now - 5s, now), 0);
  EXPECT_EQ(poll_timeout_ms(now + 2s, now, 30ms), 30);
  EXPECT_EQ(poll_timeout_ms(now + 2h, now), 60'000);
}

}  // namespace
}  // namespace spark
