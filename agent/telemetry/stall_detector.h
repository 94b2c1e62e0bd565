// Turns telemetry into named events: fragmentation_stall, reclaim_storm, pagecache_flood and
// oom_kill, each with its evidence and a one-line hint of what to do. Thresholds come from the
// policy (StallThresholds); the detector itself is pure: samples and probe events in, events out.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/event.h"
#include "telemetry/sample.h"

namespace spark::telemetry {

struct StallThresholds {
  // fragmentation_stall: one task stalled in direct compaction or direct/memcg reclaim this long.
  std::chrono::milliseconds task_stall{50};
  // fragmentation_stall: no free block of order >= high_order in any zone of a node, while
  // MemAvailable is still at least min_available_fraction of MemTotal (the cudaHostAlloc freeze).
  unsigned high_order = 9;
  double min_available_fraction = 0.20;
  // reclaim_storm: any of these over one interval.
  double allocstall_per_s = 50;        // direct reclaim entries (vmstat allocstall_*)
  double pgscan_direct_per_s = 25600;  // pages scanned by direct reclaim (100 MiB/s)
  double psi_some_avg10 = 20;          // % of time some task stalled on memory
  // pagecache_flood: Cached growing faster than this.
  uint64_t pagecache_growth_bytes_per_s = 1ull << 30;
  bool pagecache_only_in_window = false;  // true: only while a load window is open
  // The same kind fires at most once per cooldown (oom_kill always fires).
  std::chrono::seconds cooldown{10};
};

// What the detector raises is the house's one Event (core/event.h), source telemetry: type
// fragmentation_stall | reclaim_storm | pagecache_flood | oom_kill (| deep_report from the hub),
// data its evidence, subject the pid where there is one. seq: numbered by the hub that raised it
// (1, 2, ...; a deep report names its trigger by it); the agent's log numbers it again.
using DetectedEvent = Event;

class StallDetector {
 public:
  explicit StallDetector(StallThresholds t = {}) : t_(t) {}
  const StallThresholds& thresholds() const { return t_; }
  // One interval: the two samples, the probe events seen in it, whether a load window is open.
  std::vector<DetectedEvent> feed(const TelemetryInterval& iv, const std::vector<MmEvent>& events,
                                  bool window_open = false);
  // A single probe event (for a stream that reacts at once): OOM victims and long stalls. OOM
  // victims seen here are counted against the next interval's vmstat oom_kill.
  std::optional<DetectedEvent> on_event(const MmEvent& e, std::chrono::system_clock::time_point now);

 private:
  bool cooled(const std::string& kind, std::chrono::system_clock::time_point now);
  StallThresholds t_;
  std::map<std::string, std::chrono::system_clock::time_point> last_;
  uint64_t oom_events_seen_ = 0;  // OOM events from probes since the last interval
};

}  // namespace spark::telemetry
