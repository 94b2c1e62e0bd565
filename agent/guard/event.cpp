#include "guard/event.h"

namespace spark::guard {

nlohmann::json Event::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  j["type"] = type;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
  j["ts"] = static_cast<double>(us) / 1e6;
  j["guard"] = guard_id;
  // The telemetry stream (`spark-tune events`) names these "event" and "time_ms": carry both.
  j["event"] = type;
  j["time_ms"] = us / 1000;
  for (auto it = fields.begin(); it != fields.end(); ++it)
    if (!j.contains(it.key())) j[it.key()] = it.value();
  return j;
}

std::string Event::to_line() const {
  return to_json().dump();
}

}  // namespace spark::guard
