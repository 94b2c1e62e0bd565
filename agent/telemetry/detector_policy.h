// The stall detector's settings, the same for the agent and for `spark-tune events` / `monitor`
// without one: the applied profile's [detector] table (detector.stall_ms, detector.flood_gib_per_s,
// detector.deep_seconds, detector.deep_cooldown_s) over the built-in defaults. A bad value is
// warned about and its default kept.
#pragma once

#include <chrono>

#include "core/host_paths.h"
#include "telemetry/deep_trigger.h"
#include "telemetry/stall_detector.h"

namespace spark::telemetry {

struct DetectorPolicy {
  // A task stalled this long in direct reclaim/compaction is a probe event and a fragmentation_stall.
  std::chrono::nanoseconds probe_stall{std::chrono::milliseconds(50)};
  StallThresholds thresholds;  // task_stall follows probe_stall; pagecache_flood only in windows
  DeepTriggerPolicy deep;
};

DetectorPolicy detector_policy(const HostPaths& paths, DeepTriggerPolicy deep_defaults = {});

}  // namespace spark::telemetry
