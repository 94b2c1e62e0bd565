#include "core/event.h"

#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include <array>
#include <vector>

namespace spark {

namespace {

using S = EventSource;
// The one table (docs/events.md documents each; tests/unit/events_test.cpp checks it).
constexpr std::array k_types{
    EventTypeInfo{S::profile, "profile_applied", "a profile was applied (spark-tune apply)"},
    EventTypeInfo{S::profile, "profile_reverted", "applied values were put back (spark-tune revert)"},
    EventTypeInfo{S::window, "window_begin", "a load window began"},
    EventTypeInfo{S::window, "window_end", "a load window ended and its settings were restored"},
    EventTypeInfo{S::window, "window_ttl_expired", "a load window's TTL ran out (window_end follows)"},
    EventTypeInfo{S::window, "window_process_exit", "the process a window watched exited (window_end follows)"},
    EventTypeInfo{S::window, "window_port_ready",
                  "the port a window waited for accepts connections (window_end follows)"},
    EventTypeInfo{S::window, "window_resume", "the agent resumed a journaled window after a restart"},
    EventTypeInfo{S::window, "floor_crossed", "free memory or MemAvailable fell below a window's floor"},
    EventTypeInfo{S::window, "floor_action", "a step of the floor's ladder: evict, drop_caches, compact, pause, stop"},
    EventTypeInfo{S::window, "floor_restored", "memory is back above a window's floor (a paused tree resumed)"},
    EventTypeInfo{S::guard, "guard_start", "a guard boxed a server in a memory cgroup of its own"},
    EventTypeInfo{
        S::guard, "host_floor",
        "a guard's host fell below its floor (MemAvailable; unified memory): hook and restart as for its budget"},
    EventTypeInfo{S::guard, "guard_settled", "the guard's footprint settled and its budget is set"},
    EventTypeInfo{S::guard, "guard_resume", "the agent resumed a journaled guard after a restart"},
    EventTypeInfo{S::guard, "guard_error", "a guard could not do its work (the error is in data)"},
    EventTypeInfo{S::guard, "guard_end", "a guard ended: the server left the box, the limit is gone"},
    EventTypeInfo{S::guard, "memory_growth", "the guarded server grows towards its limit"},
    EventTypeInfo{S::guard, "oom_kill", "the kernel killed a process in the guard's box (merged with telemetry's)"},
    EventTypeInfo{S::guard, "hook_start", "the --on-oom hook started"},
    EventTypeInfo{S::guard, "hook_done", "the --on-oom hook finished (or was killed at its timeout)"},
    EventTypeInfo{S::guard, "server_exit", "the guarded server exited"},
    EventTypeInfo{S::guard, "server_restart", "the guard started the server again"},
    EventTypeInfo{S::guard, "restart_limit", "the server died too often: no more restarts"},
    EventTypeInfo{S::guard, "restart_failed", "the guard could not start the server again"},
    EventTypeInfo{S::guard, "server_ready", "the server accepts connections on its --until-port"},
    EventTypeInfo{S::telemetry, "oom_kill", "the OOM killer chose a victim (outside any guard)"},
    EventTypeInfo{S::telemetry, "fragmentation_stall", "an allocation stalled in direct compaction or reclaim"},
    EventTypeInfo{S::telemetry, "reclaim_storm", "direct reclaim or memory pressure over the thresholds"},
    EventTypeInfo{S::telemetry, "pagecache_flood", "the page cache grows faster than the threshold"},
    EventTypeInfo{S::telemetry, "deep_report", "deep mode's report: who allocated most during its period"},
};

}  // namespace

const char* event_source_name(EventSource s) {
  switch (s) {
    case S::profile:
      return "profile";
    case S::window:
      return "window";
    case S::guard:
      return "guard";
    case S::telemetry:
      return "telemetry";
  }
  return "telemetry";
}

std::optional<EventSource> parse_event_source(std::string_view s) {
  for (auto src : {S::profile, S::window, S::guard, S::telemetry})
    if (s == event_source_name(src)) return src;
  return std::nullopt;
}

std::span<const EventTypeInfo> event_types() { return k_types; }

bool known_event_type(EventSource source, std::string_view type) {
  for (const auto& t : k_types)
    if (t.source == source && type == t.type) return true;
  return false;
}

bool known_event_type(std::string_view type) {
  for (const auto& t : k_types)
    if (type == t.type) return true;
  return false;
}

nlohmann::json Event::to_json() const {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  return {{"seq", seq},   {"time_ms", ms},      {"source", event_source_name(source)},
          {"type", type}, {"subject", subject}, {"summary", summary},
          {"hint", hint}, {"data", data}};
}

std::string Event::to_line() const { return to_json().dump(); }

Result<Event> event_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return input_error("an event is a JSON object");
  Event e;
  try {
    auto src = parse_event_source(j.value("source", std::string()));
    if (!src) return input_error("event source: one of profile, window, guard, telemetry");
    e.source = *src;
    e.type = j.value("type", std::string());
    if (!known_event_type(e.source, e.type))
      return input_error("unknown " + std::string(event_source_name(e.source)) + " event type '" + e.type +
                         "' (see docs/events.md)");
    e.seq = j.value("seq", uint64_t{0});
    if (j.contains("time_ms"))
      e.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(j.at("time_ms").get<int64_t>()));
    e.subject = j.value("subject", std::string());
    e.summary = j.value("summary", std::string());
    e.hint = j.value("hint", std::string());
    if (j.contains("data")) e.data = j.at("data");
    if (!e.data.is_object()) return input_error("event data is a JSON object");
  } catch (const nlohmann::json::exception& x) {
    return input_error(std::string("event: ") + x.what());
  }
  return e;
}

LogFields event_log_fields(const Event& e) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(e.time.time_since_epoch()).count();
  return {{"TUNE_EVENT_SEQ", std::to_string(e.seq)},
          {"TUNE_EVENT_TIME_MS", std::to_string(ms)},
          {"TUNE_EVENT_SOURCE", event_source_name(e.source)},
          {"TUNE_EVENT_TYPE", e.type},
          {"TUNE_EVENT_SUBJECT", e.subject},
          {"TUNE_EVENT_HINT", e.hint},
          {"TUNE_EVENT_DATA", e.data.dump()}};
}

bool journal_event(const Event& e) {
  std::vector<std::string> items{"MESSAGE=" + e.summary, "PRIORITY=6", "SYSLOG_IDENTIFIER=spark-tune"};
  for (const auto& [k, v] : event_log_fields(e)) items.push_back("SPARK_" + k + "=" + v);
  std::vector<iovec> iov;
  for (auto& s : items) iov.push_back({s.data(), s.size()});
  return sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0;
}

}  // namespace spark
