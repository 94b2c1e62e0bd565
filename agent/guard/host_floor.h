// The host floor of a guard (issue 14 part 3). On a unified-memory host (GB10) the GPU's memory is
// host RAM that the server's memory cgroup does not see (memory.current rose ~2 MB per GiB the
// server allocated through CUDA): a cgroup budget alone cannot protect the host. So a guard there
// also holds a floor on MemAvailable; below it the guard warns (memory_growth, reason host_floor),
// runs its --on-oom hook (event host_floor) and, with --restart, stops the server so that the
// restart runs as after a kill by its own budget, naming the host as the cause.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "core/host_paths.h"
#include "core/meminfo.h"
#include "core/result.h"

namespace spark::guard {

// The built-in host floor where no profile says otherwise: 5% of RAM (6.4 GB on a 128 GB Spark).
inline constexpr const char* k_default_host_floor = "5%";

// --host-floor as given: "off" (or "0") none; SIZE or N% of RAM; "" the default: the applied
// profile's guard.host_floor, else k_default_host_floor, on a unified-memory host only (unified()
// asked only then). Errors are input errors that name --host-floor.
Result<uint64_t> resolve_host_floor(const std::string& asked, const std::optional<std::string>& profile_default,
                                    const MemInfo& host, const std::function<bool()>& unified);
// The same with the applied profile's default and NVML's answer from this host.
Result<uint64_t> resolve_host_floor(const HostPaths& paths, const std::string& asked, const MemInfo& host);

struct HostFloorCrossing {
  uint64_t available = 0;
  uint64_t floor = 0;
  bool first = false;  // the first report of this crossing (repeats are not)
};

// Below the floor: a crossing, then again every `repeat` while it lasts; above floor + 1/8 of it
// the watch re-arms. Pure logic: the supervisor feeds it MemAvailable, tests feed it figures.
class HostFloorWatch {
 public:
  using Clock = std::chrono::steady_clock;
  explicit HostFloorWatch(uint64_t floor, std::chrono::milliseconds repeat = std::chrono::milliseconds(10000))
      : floor_(floor), repeat_(repeat) {}
  std::optional<HostFloorCrossing> add(uint64_t available, Clock::time_point now);
  bool below() const { return below_; }
  uint64_t floor() const { return floor_; }

 private:
  uint64_t floor_;
  std::chrono::milliseconds repeat_;
  bool below_ = false;
  Clock::time_point last_{};
};

}  // namespace spark::guard
