// The telemetry loop in one object, for the agent and the verbs alike: it owns a TelemetrySource
// and the stall detector, delivers probe events as they arrive, samples procfs once per tick, and
// keeps what a server needs to answer at any time (the last frame as JSON, the Prometheus text,
// recent events, totals per event kind).
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "telemetry/deep_trigger.h"
#include "telemetry/sample.h"
#include "telemetry/stall_detector.h"

namespace spark::telemetry {

class TelemetryHub {
 public:
  TelemetryHub(std::unique_ptr<TelemetrySource> source, StallThresholds thresholds = {},
               std::chrono::milliseconds tick = std::chrono::seconds(1), size_t keep_recent = 20);
  TelemetryHub(const TelemetryHub&) = delete;  // the last interval points into the hub
  TelemetryHub& operator=(const TelemetryHub&) = delete;

  struct Step {
    std::vector<DetectedEvent> events;            // detected in this step, in order
    const TelemetryInterval* interval = nullptr;  // set when this step took a sample
  };
  // Waits up to `timeout` (never past the next tick) for probe events; samples when a tick is due.
  Result<Step> step(std::chrono::milliseconds timeout);

  void set_window_open(bool open) { window_open_ = open; }
  // Deep mode started by the detector (deep_trigger.h); off (period 0) unless set. The report
  // comes as a "deep_report" event whose data names the triggering event's seq.
  void set_deep_trigger(const DeepTriggerPolicy& p) { deep_trigger_ = DeepTrigger(p); }
  const DeepTrigger& deep_trigger() const { return deep_trigger_; }
  const std::optional<DeepReport>& last_deep_report() const { return last_deep_; }
  // How many deep periods have reported so far (a cursor for the last report).
  uint64_t deep_reports() const { return deep_reports_; }
  // Deep mode asked for (monitor --deep through the agent): attached now for `period`, reported
  // like the detector's (a deep_report event naming `who`); the cooldown follows as usual.
  // While a period runs (asked or the detector's) the request joins it: same end, same report.
  struct DeepStart {
    std::chrono::steady_clock::time_point until;
    bool joined = false;       // a period was running already
    bool by_detector = false;  // the running period is the detector's (it runs its length)
  };
  Result<DeepStart> start_deep(std::chrono::milliseconds period, const std::string& who);
  // Everyone who asked for the running period has gone: an asked period ends now (its report
  // comes at the next step()); the detector's runs its length. True when it was cut short.
  bool end_asked_deep();
  // The running period was started by the detector (not asked for).
  bool deep_by_detector() const { return deep_trigger_.running() && deep_cause_ && deep_cause_->type != "request"; }
  // When step() is next due (a daemon's timer): the next sample, or the end of a deep period;
  // meaningful after the first step().
  std::chrono::steady_clock::time_point next_tick() const;
  TelemetrySource& source() { return *source_; }
  const std::optional<TelemetrySample>& latest() const { return cur_; }
  const std::deque<DetectedEvent>& recent() const { return recent_; }
  const std::map<std::string, uint64_t>& totals() const { return totals_; }
  // The monitor frame of the last interval (null before the second sample).
  const std::vector<DetectedEvent>& last_interval_events() const { return last_interval_events_; }
  nlohmann::json latest_json() const;
  // Prometheus text exposition of the latest sample and the detector's totals.
  std::string metrics() const;

 private:
  void record(DetectedEvent& e);
  void deep_step(Step& out);
  // Deep mode attached now for `period` (the detector's or one asked for); `cause` names it in the report.
  Result<void> attach_deep(std::chrono::steady_clock::time_point now, std::chrono::milliseconds period,
                           DetectedEvent cause, const std::string& why);
  std::unique_ptr<TelemetrySource> source_;
  StallDetector detector_;
  std::chrono::milliseconds tick_;
  size_t keep_recent_;
  std::optional<TelemetrySample> prev_, cur_;
  std::optional<TelemetryInterval> interval_;
  std::vector<DetectedEvent> interval_events_;       // of the interval in progress
  std::vector<DetectedEvent> last_interval_events_;  // of the last closed interval
  std::chrono::steady_clock::time_point next_sample_{};
  bool window_open_ = false;
  bool psi_triggered_ = false;
  std::deque<DetectedEvent> recent_;
  std::map<std::string, uint64_t> totals_;
  uint64_t seq_ = 0;
  DeepTrigger deep_trigger_{DeepTriggerPolicy{std::chrono::milliseconds(0)}};
  std::optional<DetectedEvent> deep_cause_;
  std::optional<DeepReport> last_deep_;
  uint64_t deep_reports_ = 0;
  bool deep_error_logged_ = false;
};

}  // namespace spark::telemetry
