// What `spark-tune monitor` shows, as JSON (one NDJSON line per interval) and as a terminal view.
// Pure functions of samples, so the agent can serve the same JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "telemetry/sample.h"
#include "telemetry/stall_detector.h"

namespace spark::telemetry {

struct MonitorFrame {
  const TelemetryInterval* interval = nullptr;
  std::string probe_status;
  std::vector<DetectedEvent> events;  // detected in this interval
  std::vector<DetectedEvent> recent;  // the last few, for the terminal view
  std::optional<DeepReport> deep;     // when a deep period just ended
  unsigned high_order = 9;            // fragmentation index shown from this order up
};

nlohmann::json monitor_json(const MonitorFrame& f);
nlohmann::json deep_json(const DeepReport& r);
// The terminal view; `width` columns (bars scale to it).
std::string monitor_text(const MonitorFrame& f, int width = 100);

}  // namespace spark::telemetry
