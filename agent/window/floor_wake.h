// What wakes a floor's watch thread besides its timer (window/floor.h): an fd that becomes readable
// (epoll) when the kernel starts reclaiming, and a drain that consumes what it says. The real one is
// the reclaim tracepoints (telemetry/reclaim_wake.h); tests give a fake on an eventfd.
#pragma once

#include <cstddef>
#include <string>

namespace spark::window {

class FloorWakeSource {
 public:
  virtual ~FloorWakeSource() = default;
  // Readable (EPOLLIN) when a wake-up is waiting.
  virtual int fd() const = 0;
  // Consumes what is waiting; returns how many wake-ups it held (0: a spurious wake).
  virtual size_t drain() = 0;
  // "tracepoints (tp_btf: kswapd_wake, direct_reclaim, memcg_reclaim)", for the log and --json.
  virtual std::string name() const = 0;
};

}  // namespace spark::window
