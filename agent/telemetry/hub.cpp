#include "telemetry/hub.h"

#include <algorithm>
#include <cstdio>

#include "core/log.h"

#include "telemetry/metrics.h"
#include "telemetry/monitor_view.h"

namespace spark::telemetry {

TelemetryHub::TelemetryHub(std::unique_ptr<TelemetrySource> source, StallThresholds thresholds,
                           std::chrono::milliseconds tick, size_t keep_recent)
    : source_(std::move(source)), detector_(thresholds), tick_(tick), keep_recent_(keep_recent) {}

void TelemetryHub::record(DetectedEvent& e) {
  e.seq = ++seq_;
  ++totals_[e.type];
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
  if (auto due = deep_trigger_.due())
    until_tick = std::max(std::chrono::milliseconds(0),
                          std::min(until_tick, std::chrono::duration_cast<std::chrono::milliseconds>(*due - now)));
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
  if (!psi_triggered_ && std::chrono::steady_clock::now() < next_sample_) {
    deep_step(out);
    return out;
  }
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
  deep_step(out);
  next_sample_ += tick_;
  if (next_sample_ < std::chrono::steady_clock::now()) next_sample_ = std::chrono::steady_clock::now() + tick_;
  out.interval = &*interval_;
  // interval_events_ now holds everything of the interval just closed; the frame uses it.
  last_interval_events_.swap(interval_events_);
  interval_events_.clear();
  return out;
}

std::chrono::steady_clock::time_point TelemetryHub::next_tick() const {
  if (auto due = deep_trigger_.due()) return std::min(next_sample_, *due);
  return next_sample_;
}

namespace {

std::string short_bytes(uint64_t pages) {
  double b = static_cast<double>(pages) * 4096;
  char buf[32];
  if (b >= double(1ull << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", b / double(1ull << 30));
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / double(1ull << 20));
  return buf;
}

DetectedEvent deep_report_event(const DeepReport& r, const DetectedEvent& cause) {
  DetectedEvent d;
  d.type = "deep_report";
  d.time = std::chrono::system_clock::now();
  uint64_t allocs = 0, high = 0;
  for (size_t o = 0; o < r.orders.size(); ++o) {
    allocs += r.orders[o];
    if (o >= 4) high += r.orders[o];
  }
  char head[160];
  if (cause.type == "request")
    std::snprintf(head, sizeof head, "deep mode %.1f s asked by %s: %llu page allocations (%llu of order >= 4)",
                  r.seconds, cause.summary.c_str(), static_cast<unsigned long long>(allocs),
                  static_cast<unsigned long long>(high));
  else
    std::snprintf(head, sizeof head, "deep mode %.1f s after %s #%llu: %llu page allocations (%llu of order >= 4)",
                  r.seconds, cause.type.c_str(), static_cast<unsigned long long>(cause.seq),
                  static_cast<unsigned long long>(allocs), static_cast<unsigned long long>(high));
  d.summary = head;
  for (size_t i = 0; i < r.top.size() && i < 3; ++i)
    d.summary += (i ? ", " : "; top: ") + r.top[i].comm + "(" + std::to_string(r.top[i].tgid) + ") " +
                 short_bytes(r.top[i].pages);
  d.hint =
      "the tasks that allocated most while the host stalled; many high-order allocations compete for "
      "contiguous memory (THP, pinned buffers): see spark-tune monitor's free-by-order bars";
  d.data = deep_json(r);
  d.data["trigger"] = {{"seq", cause.seq}, {"event", cause.type}, {"summary", cause.summary}};
  d.data["detached"] = true;
  return d;
}

}  // namespace

Result<TelemetryHub::DeepStart> TelemetryHub::start_deep(std::chrono::milliseconds period, const std::string& who) {
  auto now = std::chrono::steady_clock::now();
  if (deep_trigger_.running()) {
    // Join: one period, one report for everyone who asked (a second attach would fail anyway).
    DeepStart joined{*deep_trigger_.due(), true, deep_by_detector()};
    log_info("telemetry: " + who + " joins the deep-mode period running (" +
             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(joined.until - now).count()) +
             " ms left)");
    return joined;
  }
  DetectedEvent cause;
  cause.type = "request";
  cause.summary = who;
  SPARK_TRY_VOID(attach_deep(now, period, std::move(cause), "asked by " + who));
  return DeepStart{now + period, false, false};
}

bool TelemetryHub::end_asked_deep() {
  if (!deep_trigger_.running() || deep_by_detector()) return false;
  auto now = std::chrono::steady_clock::now();
  if (*deep_trigger_.due() <= now) return false;
  deep_trigger_.end_early(now);  // due now: the next step() reports and detaches
  log_info("telemetry: deep mode ends early: everyone who asked for it has gone");
  return true;
}

Result<void> TelemetryHub::attach_deep(std::chrono::steady_clock::time_point now, std::chrono::milliseconds period,
                                       DetectedEvent cause, const std::string& why) {
  SPARK_TRY_VOID(source_->deep_start());
  deep_trigger_.started_for(now, period);
  deep_cause_ = std::move(cause);
  log_info("telemetry: deep mode attached for " + std::to_string(period.count()) + " ms, " + why);
  return {};
}

// Deep mode started by the detector: end a period that is due (report, detach), or start one on
// an event of a triggering kind.
void TelemetryHub::deep_step(Step& out) {
  auto now = std::chrono::steady_clock::now();
  if (auto due = deep_trigger_.due(); due && now >= *due) {
    auto r = source_->deep_finish(deep_trigger_.policy().top_n);
    deep_trigger_.finished(now);
    if (r.ok() && deep_cause_) {
      last_deep_ = *r;
      ++deep_reports_;
      DetectedEvent d = deep_report_event(*r, *deep_cause_);
      record(d);
      out.events.push_back(d);
      interval_events_.push_back(std::move(d));
    } else if (!r.ok()) {
      log_warning("telemetry: deep mode report: " + describe(r.error()));
    }
    deep_cause_.reset();
  }
  if (deep_trigger_.running()) return;
  for (const auto& e : out.events) {
    if (!deep_trigger_.should_start(e.type, now)) continue;
    if (auto st = attach_deep(now, deep_trigger_.policy().period, e, "after " + e.type); !st.ok()) {
      deep_trigger_.failed(now);
      if (!deep_error_logged_) log_warning("telemetry: deep mode not attached: " + describe(st.error()));
      deep_error_logged_ = true;
    }
    break;
  }
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
  x.deep_attached = source_->deep_attached();
  x.last_deep = last_deep_ ? &*last_deep_ : nullptr;
  return render_metrics(*cur_, x);
}

}  // namespace spark::telemetry
