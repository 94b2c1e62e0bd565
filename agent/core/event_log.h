// The one bounded log of events in a process (the agent's, or a foreground guard's): numbers each
// event (seq 1, 2, ...), keeps the newest `capacity`, counts what it pushed out, counts events by
// source and type (/metrics), answers "what came after cursor N" with filters, and tells listeners
// of each event (the journal view, long-poll waiters, a foreground guard's stdout).
//
// An OOM kill is one event: while guards run, an oom_kill the probes saw is held up to
// k_oom_join for the guard's own oom_kill of the same victim; while the probes run, a guard's
// oom_kill is held as long for the probes' one. The two become one guard event (the probe's
// evidence under data.probe). Unmatched, a held event goes out at the end of its hold as it was;
// a probe's oom_kill that comes after the guard's was published is folded into it (not published
// again).
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/event.h"

namespace spark {

struct EventFilter {
  std::optional<EventSource> source;
  std::string type;     // empty: any
  std::string subject;  // empty: any
  bool matches(const Event& e) const;
};

struct EventPage {
  std::vector<Event> events;  // after the cursor, matching the filter, oldest first
  uint64_t next = 0;          // the cursor for the next question (the last seq the log holds)
  uint64_t dropped = 0;       // events after the cursor pushed out before they were asked for
};

class EventLog {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t k_default_capacity = 4096;
  static constexpr std::chrono::milliseconds k_oom_join{2000};

  explicit EventLog(size_t capacity = k_default_capacity);
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Numbers and keeps the event, tells the listeners. Returns its seq; 0 when it is held (an
  // oom_kill waiting for its guard) or folded into an event already published.
  uint64_t append(Event e, Clock::time_point now = Clock::now());
  // Publishes held events whose hold is over; the loop calls it at next_flush().
  void flush(Clock::time_point now = Clock::now());
  std::optional<Clock::time_point> next_flush() const;

  // Whether a probe's oom_kill may belong to a guard (any guard runs): then it is held.
  void set_guards_active(std::function<bool()> f) { guards_active_ = std::move(f); }
  // Whether the probes see OOM kills (they are attached): then a guard's oom_kill is held.
  void set_probes_active(std::function<bool()> f) { probes_active_ = std::move(f); }

  EventPage after(uint64_t cursor, const EventFilter& f = {}) const;
  uint64_t last_seq() const { return seq_; }
  size_t capacity() const { return capacity_; }
  size_t size() const { return kept_.size(); }
  uint64_t dropped() const { return dropped_; }  // pushed out by the capacity since start
  uint64_t folded() const { return folded_; }    // probe oom_kills merged into a guard's
  // Published events by (source, type).
  const std::map<std::pair<std::string, std::string>, uint64_t>& totals() const { return totals_; }
  // Prometheus text: spark_tune_events_total{source,type} (every known type, zeros too),
  // spark_tune_events_dropped_total, spark_tune_event_log_capacity.
  std::string metrics_text() const;

  using Listener = std::function<void(const Event&)>;
  void on_append(Listener l) { listeners_.push_back(std::move(l)); }

 private:
  uint64_t publish(Event e);
  struct Held {
    Event e;
    Clock::time_point until;
  };
  struct GuardOom {
    std::string guard;
    nlohmann::json pids;  // the server pid and the victims
    Clock::time_point until;
  };
  size_t capacity_;
  std::deque<Event> kept_;
  uint64_t seq_ = 0;
  uint64_t dropped_ = 0;
  uint64_t folded_ = 0;
  std::map<std::pair<std::string, std::string>, uint64_t> totals_;
  std::vector<Listener> listeners_;
  std::function<bool()> guards_active_;
  std::function<bool()> probes_active_;
  std::vector<Held> held_;
  std::vector<GuardOom> guard_ooms_;
};

}  // namespace spark
