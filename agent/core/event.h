// One event type for everything that happens: a profile applied, a window begun or ended, a guard's
// server killed or ready, a stall the detector saw. Every consumer (spark-tune events, guard wait,
// the foreground guard's output, the journal, /metrics) is a view of one EventLog (event_log.h).
// docs/events.md describes every type; k_event_types is the one table of them (a unit test checks
// that each is documented).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/log.h"
#include "core/result.h"

namespace spark {

enum class EventSource { profile, window, guard, telemetry };
const char* event_source_name(EventSource s);
std::optional<EventSource> parse_event_source(std::string_view s);

struct Event {
  uint64_t seq = 0;  // numbered by the log that keeps it (1, 2, ...); 0: not (yet) in a log
  std::chrono::system_clock::time_point time = std::chrono::system_clock::now();
  EventSource source = EventSource::telemetry;
  std::string type;     // one of k_event_types for this source
  std::string subject;  // what it is about: a window id, a guard id, a profile name, a pid; may be empty
  std::string summary;  // one line for people
  std::string hint;     // one line: what to do (may be empty)
  nlohmann::json data = nlohmann::json::object();

  // {"seq", "time_ms", "source", "type", "subject", "summary", "hint", "data"}: the one shape on
  // every view (events --json, guard wait, the foreground guard, a hook's stdin, EVENT_DATA).
  nlohmann::json to_json() const;
  std::string to_line() const;  // to_json().dump(), no newline
};
Result<Event> event_from_json(const nlohmann::json& j);

using EventSink = std::function<void(const Event&)>;

// The one table of event types: every type the code emits, by source, with a line for people.
struct EventTypeInfo {
  EventSource source;
  const char* type;
  const char* what;
};
std::span<const EventTypeInfo> event_types();
bool known_event_type(EventSource source, std::string_view type);
bool known_event_type(std::string_view type);  // of any source

// The journal's view of one event: SPARK_TUNE_EVENT_SEQ, _TIME_MS, _SOURCE, _TYPE, _SUBJECT, _HINT,
// _DATA (JSON), as fields for log() (which adds the SPARK_ prefix); MESSAGE is the summary.
LogFields event_log_fields(const Event& e);
// Sends the event to the journal with those fields whatever the log sink (the CLI's events when no
// agent runs); false when there is no journal to take it.
bool journal_event(const Event& e);

}  // namespace spark
