// One loop contract for the agent's parts. The agent (daemon/agent.h) is one single-threaded poll
// loop; each part that needs waking is a LoopPart: the fds it watches, each with the poll events
// that mean work for it, and the time it next wants to run. The services (daemon/service.h), the
// guard supervisor (guard/supervisor.h) and the telemetry source (telemetry/sample.h) all have
// this one shape, so whoever drives them (the agent, a foreground verb, a test) drives them alike:
//
//   before every poll:  poll_fds()   -> {fd, events}: POLLIN, or POLLPRI for a PSI trigger or a
//                                       cgroup v2 events file (both are always POLLIN-ready)
//                       next_timer() -> the earliest time it wants on_timer (nullopt: none)
//   after the poll:     on_ready(fd, now) for each of its fds that polled ready (or HUP/ERR)
//                       on_timer(now) when its next_timer() has come
//
// Every call comes from the loop's thread; none may block or sleep.
#pragma once

#include <poll.h>

#include <chrono>
#include <optional>
#include <span>
#include <vector>

#include "core/result.h"

namespace spark {

using LoopClock = std::chrono::steady_clock;

class LoopPart {
 public:
  virtual ~LoopPart() = default;
  // Asked before every poll; revents is ignored.
  virtual std::vector<pollfd> poll_fds() { return {}; }
  virtual void on_ready(int /*fd*/, LoopClock::time_point /*now*/) {}
  // Asked before every poll and again after it: on_timer is called once it has come.
  virtual std::optional<LoopClock::time_point> next_timer() { return std::nullopt; }
  virtual void on_timer(LoopClock::time_point /*now*/) {}
};

// The poll timeout in ms until `next` (rounded up, so a timer less than 1 ms away does not spin),
// at most `cap`; -1 (wait for an fd) without a timer and without a cap.
int poll_timeout_ms(std::optional<LoopClock::time_point> next, LoopClock::time_point now,
                    std::optional<std::chrono::milliseconds> cap = std::nullopt);

// One round of a loop over `parts` alone (a foreground verb, a test, a bench): polls every part's
// fds for at most `max_wait` and never past the earliest timer, calls on_ready for each ready fd,
// then on_timer for each part whose timer has come. An interrupted poll (EINTR) is a round with
// nothing ready; any other poll error is returned.
Result<void> run_loop_once(std::span<LoopPart* const> parts, std::chrono::milliseconds max_wait);

}  // namespace spark
