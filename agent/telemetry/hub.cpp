#include "telemetry/hub.h"

#include <algorithm>

#include "telemetry/metrics.h"
#include "telemetry/monitor_view.h"

namespace spark {

TelemetryHub::TelemetryHub(std::unique_ptr<TelemetrySource> source, StallThresholds thresholds,
                           std::chrono::milliseconds tick, size_t keep_recent)
    : source_(std::move(source)), detector_(thresholds), tick_(tick), keep_recent_(keep_recent) {}

void TelemetryHub::record(const DetectedEvent& e) {
  ++totals_[e.kind];
  recent_.push_back(e);
  while (recent_.size() > keep_recent_) recent_.pop_front();
}

Result<TelemetryHub::Step> TelemetryHub::step(std::chrono::milliseconds timeout) {
  Step out;
  auto now = std::chrono::steady_clock::now();
  if (!cur_) {
    // First call: the baseline sample only.
    SPARK_TRY(TelemetrySample s, source_->sample());
    cur_ = std::move(s);
    next_sample_ = now + tick_;
    return out;
  }
  auto until_tick =
      std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(next_sample_ - now));
  // OOM victims and long stalls go out the moment the ring buffer delivers them.
  auto polled = source_->poll_events(std::min(timeout, until_tick), [&](const MmEvent& e) {
    if (auto d = detector_.on_event(e, std::chrono::system_clock::now())) {
      record(*d);
      out.events.push_back(std::move(*d));
    }
  });
  if (!polled.ok()) return polled.error();
  for (const auto& e : out.events) interval_events_.push_back(e);
  // A PSI trigger closes the interval at once: pressure is judged on fresh numbers.
  if (source_->take_pressure_trigger()) psi_triggered_ = true;
  if (!psi_triggered_ && std::chrono::steady_clock::now() < next_sample_) return out;
  SPARK_TRY(TelemetrySample s, source_->sample());
  prev_ = std::move(cur_);
  cur_ = std::move(s);
  interval_ = interval_between(*prev_, *cur_);
  interval_->psi_triggered = psi_triggered_;
  psi_triggered_ = false;
  // OOM kills already reported from the probes are not repeated: the detector reports only those
  // vmstat counted beyond them.
  for (auto& d : detector_.feed(*interval_, {}, window_open_)) {
    record(d);
    out.events.push_back(d);
    interval_events_.push_back(std::move(d));
  }
  next_sample_ += tick_;
  if (next_sample_ < std::chrono::steady_clock::now()) next_sample_ = std::chrono::steady_clock::now() + tick_;
  out.interval = &*interval_;
  // interval_events_ now holds everything of the interval just closed; the frame uses it.
  last_interval_events_.swap(interval_events_);
  interval_events_.clear();
  return out;
}

nlohmann::json TelemetryHub::latest_json() const {
  if (!interval_) return nullptr;
  MonitorFrame f;
  f.interval = &*interval_;
  f.probe_status = source_->probe_status();
  f.events = last_interval_events_;
  return monitor_json(f);
}

std::string TelemetryHub::metrics() const {
  if (!cur_) return "";
  MetricsExtras x;
  std::tie(x.probes_attached, x.probes_total) = source_->probe_counts();
  x.detected_events_total = totals_;
  return render_metrics(*cur_, x);
}

}  // namespace spark
