// Guard events: one JSON object per line, {"type": "...", "ts": <unix seconds>, "guard": "g1", ...}.
// The same shape as the telemetry event stream (issue 4), so one reader handles both.
#pragma once

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace spark::guard {

struct Event {
  std::string type;  // memory_growth, oom_kill, hook_done, server_restart, server_ready, guard_start, guard_end, ...
  std::chrono::system_clock::time_point time = std::chrono::system_clock::now();
  std::string guard_id;
  nlohmann::json fields = nlohmann::json::object();

  nlohmann::json to_json() const;
  std::string to_line() const;  // to_json().dump(), no newline
};

using EventSink = std::function<void(const Event&)>;

}  // namespace spark::guard
