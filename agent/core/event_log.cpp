#include "core/event_log.h"

#include <algorithm>
#include <set>

#include "core/log.h"

namespace spark {

bool EventFilter::matches(const Event& e) const {
  if (source && e.source != *source) return false;
  if (!type.empty() && e.type != type) return false;
  if (!subject.empty() && e.subject != subject) return false;
  return true;
}

EventLog::EventLog(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

namespace {

bool is_probe_oom(const Event& e) { return e.source == EventSource::telemetry && e.type == "oom_kill"; }
bool is_guard_oom(const Event& e) { return e.source == EventSource::guard && e.type == "oom_kill"; }

std::optional<int64_t> pid_of(const nlohmann::json& data) {
  if (data.is_object() && data.contains("pid") && data["pid"].is_number_integer()) return data["pid"].get<int64_t>();
  return std::nullopt;
}

// The server pid and the victims a guard's oom_kill names.
nlohmann::json guard_pids(const Event& g) {
  nlohmann::json pids = nlohmann::json::array();
  if (auto p = pid_of(g.data)) pids.push_back(*p);
  if (g.data.contains("victims") && g.data["victims"].is_array())
    for (const auto& v : g.data["victims"]) pids.push_back(v);
  return pids;
}

// A probe's oom_kill is the guard's when its victim is one the guard names; one without a pid
// (counted by vmstat) matches any.
bool same_victim(const Event& probe, const nlohmann::json& pids) {
  auto p = pid_of(probe.data);
  if (!p) return true;
  return std::find(pids.begin(), pids.end(), nlohmann::json(*p)) != pids.end();
}

Event merged(Event guard, const Event& probe) {
  guard.data["probe"] = probe.data;
  guard.time = std::min(guard.time, probe.time);
  if (!probe.summary.empty()) guard.summary = "guard " + guard.subject + ": " + probe.summary;
  if (guard.hint.empty()) guard.hint = probe.hint;
  return guard;
}

}  // namespace

uint64_t EventLog::append(Event e, Clock::time_point now) {
  flush(now);
  if (is_probe_oom(e)) {
    for (auto it = guard_ooms_.begin(); it != guard_ooms_.end(); ++it)
      if (now < it->until && same_victim(e, it->pids)) {
        // The guard already said it: one event per kill.
        ++folded_;
        log_debug("oom_kill of pid " + e.data.value("pid", nlohmann::json()).dump() + " is guard " + it->guard +
                  "'s, already reported");
        guard_ooms_.erase(it);
        return 0;
      }
    for (auto it = held_.begin(); it != held_.end(); ++it)
      if (is_guard_oom(it->e) && same_victim(e, guard_pids(it->e))) {
        Event one = merged(std::move(it->e), e);
        held_.erase(it);
        ++folded_;
        return publish(std::move(one));
      }
    if (guards_active_ && guards_active_()) {
      held_.push_back({std::move(e), now + k_oom_join});
      return 0;
    }
  }
  if (is_guard_oom(e)) {
    auto pids = guard_pids(e);
    for (auto it = held_.begin(); it != held_.end(); ++it)
      if (is_probe_oom(it->e) && same_victim(it->e, pids)) {
        Event one = merged(std::move(e), it->e);
        held_.erase(it);
        ++folded_;
        return publish(std::move(one));
      }
    if (probes_active_ && probes_active_()) {
      held_.push_back({std::move(e), now + k_oom_join});
      return 0;
    }
    guard_ooms_.push_back({e.subject, pids, now + k_oom_join});
  }
  return publish(std::move(e));
}

void EventLog::flush(Clock::time_point now) {
  std::erase_if(guard_ooms_, [&](const GuardOom& g) { return now >= g.until; });
  while (true) {
    auto it = std::find_if(held_.begin(), held_.end(), [&](const Held& h) { return now >= h.until; });
    if (it == held_.end()) break;
    Event e = std::move(it->e);
    held_.erase(it);
    publish(std::move(e));
  }
}

std::optional<EventLog::Clock::time_point> EventLog::next_flush() const {
  std::optional<Clock::time_point> t;
  for (const auto& h : held_) t = t ? std::min(*t, h.until) : h.until;
  return t;
}

uint64_t EventLog::publish(Event e) {
  if (!known_event_type(e.source, e.type))
    log_warning(std::string("event log: type '") + e.type + "' of " + event_source_name(e.source) +
                " is not in the table of event types (core/event.cpp): document it in docs/events.md");
  e.seq = ++seq_;
  ++totals_[{event_source_name(e.source), e.type}];
  kept_.push_back(std::move(e));
  while (kept_.size() > capacity_) {
    kept_.pop_front();
    ++dropped_;
  }
  const Event& stored = kept_.back();
  // A listener may append (none does today); iterate over a copy of the count.
  for (size_t i = 0, n = listeners_.size(); i < n; ++i) listeners_[i](stored);
  return seq_;
}

EventPage EventLog::after(uint64_t cursor, const EventFilter& f) const {
  EventPage page;
  page.next = seq_;
  uint64_t first_kept = kept_.empty() ? seq_ + 1 : kept_.front().seq;
  if (cursor + 1 < first_kept) page.dropped = first_kept - cursor - 1;
  for (const auto& e : kept_)
    if (e.seq > cursor && f.matches(e)) page.events.push_back(e);
  return page;
}

std::string EventLog::metrics_text() const {
  std::string out;
  out += "# HELP spark_tune_events_total events in the agent's event log, by source and type\n";
  out += "# TYPE spark_tune_events_total counter\n";
  std::set<std::pair<std::string, std::string>> seen;
  auto line = [&](const std::string& source, const std::string& type, uint64_t n) {
    out += "spark_tune_events_total{source=\"" + source + "\",type=\"" + type + "\"} " + std::to_string(n) + "\n";
  };
  for (const auto& t : event_types()) {
    std::pair<std::string, std::string> key{event_source_name(t.source), t.type};
    auto it = totals_.find(key);
    line(key.first, key.second, it == totals_.end() ? 0 : it->second);
    seen.insert(key);
  }
  for (const auto& [key, n] : totals_)
    if (!seen.count(key)) line(key.first, key.second, n);
  out +=
      "# HELP spark_tune_events_dropped_total events pushed out of the bounded event log (capacity "
      "spark_tune_event_log_capacity) since the agent started\n";
  out += "# TYPE spark_tune_events_dropped_total counter\n";
  out += "spark_tune_events_dropped_total " + std::to_string(dropped_) + "\n";
  out += "# HELP spark_tune_event_log_capacity events the agent's event log keeps\n";
  out += "# TYPE spark_tune_event_log_capacity gauge\n";
  out += "spark_tune_event_log_capacity " + std::to_string(capacity_) + "\n";
  return out;
}

}  // namespace spark
