// The kernel's reclaim tracepoints as a wake-up source for a window's floor (issue 14 part 2):
// mm_vmscan_kswapd_wake, mm_vmscan_direct_reclaim_begin and mm_vmscan_memcg_reclaim_begin, one
// ring-buffer record per burst (bpf/floor_wake.bpf.c: at most one a millisecond), the reader woken
// at once. One program kind for all three (tp_btf, else raw_tp, else the classic tracepoint); where
// none loads or attaches, open() says why and the floor keeps its timer and PSI trigger.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "window/floor_wake.h"

namespace spark::telemetry {

struct ReclaimWakeCounts {
  uint64_t kswapd = 0, direct = 0, memcg = 0;  // tracepoint hits
  uint64_t sent = 0, lost = 0;                 // records written, ring full
};

class ReclaimWake final : public window::FloorWakeSource {
 public:
  // min_gap: at most one wake-up per this (reclaim calls come in bursts of thousands).
  static Result<std::unique_ptr<ReclaimWake>> open(const HostPaths& paths,
                                                   std::chrono::microseconds min_gap = std::chrono::microseconds(1000));
  ~ReclaimWake() override;
  int fd() const override;
  size_t drain() override;
  std::string name() const override;
  ReclaimWakeCounts counts() const;
  const std::vector<std::string>& attached() const { return attached_; }

 private:
  struct Impl;
  explicit ReclaimWake(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> attached_;
  std::string kind_;
};

}  // namespace spark::telemetry
