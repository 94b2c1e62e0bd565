// The agent's event stream: requests over the one EventLog every service appends to
// (ServiceContext::events()).
//   events.list {"after": cursor?, "wait_ms": n?, "source"?, "type"?, "subject"?}
//       -> {"events": [event...], "next": cursor, "dropped": n, "capacity": n}
//       Without "after" only the current cursor (start from now). With wait_ms (at most 10 s) a
//       long-poll: the answer comes when an event after the cursor matches the filters, or when
//       the wait is over. "dropped": events after the cursor the log no longer holds.
//   events.emit {"event": {...}} -> {"seq": n}: a CLI verb's event (source profile only: apply and
//       revert run in the CLI process and tell the agent what they did).
//   events.status {} -> {"next", "kept", "capacity", "dropped", "folded" (probe oom_kills merged
//       into a guard's), "waiters" (long-polls waiting now),
//       "requests" (list requests served)}
//   telemetry.events / guard.events: the older requests, views of the same log with the source set.
// Each event also goes to the journal (the agent's log sink) with SPARK_TUNE_EVENT_* fields.
#pragma once

#include <vector>

#include "daemon/service.h"

namespace spark::daemon {

class EventService : public Service {
 public:
  std::string name() const override { return "events"; }
  Result<void> on_start(ServiceContext& ctx) override;
  std::optional<Clock::time_point> next_timer() override;
  void on_timer(Clock::time_point now) override;
  void on_stop() override;

 private:
  struct Waiter {
    DeferredReply to;
    uint64_t after = 0;
    EventFilter filter;
    Clock::time_point deadline;
    bool legacy_guard = false;  // guard.events' reply shape
  };
  Result<json> list(const json& params, std::optional<EventSource> source, bool legacy_guard);
  void answer_waiters(bool all, Clock::time_point now);

  ServiceContext* ctx_ = nullptr;
  std::vector<Waiter> waiters_;
  bool appended_ = false;  // since the waiters were last looked at
  uint64_t served_ = 0;    // list requests (events.list, telemetry.events, guard.events)
};

// The reply to events.list for a page of the log.
json event_page_json(const EventPage& page, size_t capacity);

}  // namespace spark::daemon
