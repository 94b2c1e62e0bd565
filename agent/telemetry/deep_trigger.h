// When the detector may attach deep mode by itself: a fragmentation_stall or reclaim_storm starts
// one bounded period (kmem:mm_page_alloc order histogram + top allocating tasks), then a cooldown
// counted from the period's end keeps it from staying attached however often the events come
// (at most period / (period + cooldown) of the time). Pure: times in, decisions out.
// Policy: the profile's [detector] deep_seconds (0 = never) and deep_cooldown_s.
#pragma once

#include <chrono>
#include <optional>
#include <set>
#include <string>

namespace spark::telemetry {

struct DeepTriggerPolicy {
  std::chrono::milliseconds period{std::chrono::seconds(10)};  // 0: the detector never attaches it
  std::chrono::milliseconds cooldown{std::chrono::seconds(120)};
  std::set<std::string> kinds{"fragmentation_stall", "reclaim_storm"};
  size_t top_n = 10;
};

class DeepTrigger {
 public:
  using Clock = std::chrono::steady_clock;
  explicit DeepTrigger(DeepTriggerPolicy p = {}) : p_(std::move(p)) {}
  const DeepTriggerPolicy& policy() const { return p_; }
  // Whether an event of this kind, now, starts a period.
  bool should_start(const std::string& kind, Clock::time_point now) const;
  // A period began now (or an attempt failed: then the cooldown starts now, no retry per event).
  void started(Clock::time_point now);
  // A period asked for (monitor --deep through the agent) of its own length.
  void started_for(Clock::time_point now, std::chrono::milliseconds period) { until_ = now + period; }
  // The running period ends at `t` instead of its own end (everyone who asked for it has gone).
  void end_early(Clock::time_point t) {
    if (until_ && t < *until_) until_ = t;
  }
  void failed(Clock::time_point now);
  // When the running period ends (none when idle).
  std::optional<Clock::time_point> due() const { return until_; }
  bool running() const { return until_.has_value(); }
  // The period ended now: the cooldown starts.
  void finished(Clock::time_point now);
  // When the next period may start at the earliest (none: never ran).
  std::optional<Clock::time_point> cooldown_until() const { return cool_until_; }

 private:
  DeepTriggerPolicy p_;
  std::optional<Clock::time_point> until_;
  std::optional<Clock::time_point> cool_until_;
};

// "deep_seconds" / "deep_cooldown_s" values from a profile ("10", "2.5"); error text for the log.
std::optional<std::chrono::milliseconds> parse_policy_seconds(const std::string& value, std::string* error);

}  // namespace spark::telemetry
