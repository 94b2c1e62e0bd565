// What the guard supervisor (guard/supervisor.h) holds for each guard while it runs: the
// journaled state plus its box, fds, watches and timers. Shared by the supervisor's two files,
// admission.cpp (a guard request validated and set up) and supervisor.cpp (the runtime: poll, tick,
// restarts, end); not for other parts.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "core/end_retry.h"
#include "core/fd.h"
#include "core/port.h"
#include "guard/cgroup.h"
#include "guard/growth.h"
#include "guard/guard_state.h"
#include "guard/host_floor.h"

namespace spark::guard {

using Clock = std::chrono::steady_clock;

// A box the guard makes is named after it: "spark-guard-<id>".
inline constexpr const char* k_box_prefix = "spark-guard-";

inline int64_t unix_ms() {
  return std::chrono::duration_cast<Ms>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct GuardRuntime {
  GuardState st;
  std::unique_ptr<CgroupBox> box;
  Fd oom_fd, pressure_fd, events_fd, pidfd;
  std::optional<GrowthWatch> growth;
  std::optional<HostFloorWatch> host_floor;  // guard/host_floor.h
  uint64_t oom_kills_seen = 0;
  // Victims already reported, with when: with memory.oom.group the kernel kills the chosen victim a
  // second time in the group kill, and memory.events' oom_kill counts both (seen on 6.12).
  std::map<pid_t, Clock::time_point> reported_victims;
  Clock::time_point last_oom_event{};
  Clock::time_point next_sample{}, settle_at{}, fast_until{}, last_pressure{}, restart_at{}, spawned_at{}, next_probe{};
  bool pressure_once = false;
  enum class Phase { running, restart_wait, probing } phase = Phase::running;
  std::vector<pid_t> last_procs;
  std::map<pid_t, uint64_t> rss_then;
  Clock::time_point rss_then_time{};
  bool main_is_child = false;
  std::optional<PortAddress> port;
  std::unique_ptr<PortProbe> probe;  // the readiness probe on `port`: never blocks the loop
  EndRetry end_retry;                // an end that failed: retried with the backoff (core/end_retry.h)
};

}  // namespace spark::guard
