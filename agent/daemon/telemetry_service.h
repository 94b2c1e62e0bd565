// The agent's telemetry: one TelemetryHub for the agent's lifetime, so probes stay attached across
// CLI sessions. The hub's fds (ring buffer, PSI trigger) and its sampling tick run in the agent
// loop. Requests:
//   telemetry.sample  {"after": seq?, "width": cols?}  -> {"seq", "frame" (monitor --json line),
//                     "text" (monitor's terminal view, when width is given), "probe_status"}
//   (telemetry.events: the agent's event log with source telemetry, daemon/event_service.h)
//   telemetry.metrics {}  -> {"text": Prometheus exposition}
//   telemetry.deep    {"seconds", "who"?, "hold"?}  -> deep mode for the period (monitor --deep). A
//                     period already running (asked or the detector's) is joined: one period, one
//                     report. Without hold: {"period_ms", "reports", "joined", "ends_in_ms"} at once.
//                     With "hold": true the answer comes when the period reports ({"report", "reports",
//                     "joined"}); the connection held open is the asker: when every holder of an asked
//                     period has gone (closed, killed, Ctrl-C) the period ends early. A period the
//                     detector started runs its length.
//   telemetry.status  {}  -> probe status, details, metrics endpoint, requests served by kind,
//                     deep mode (attached now, period, cooldown, whether a report was made)
// and, unless switched off, GET /metrics over HTTP on loopback (metrics_http.h).
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "daemon/metrics_http.h"
#include "daemon/service.h"
#include "telemetry/hub.h"

namespace spark::daemon {

struct TelemetryServiceOptions {
  bool use_bpf = true;
  uint16_t metrics_port = k_default_metrics_port;  // 0: no HTTP endpoint
  std::string metrics_address = k_default_metrics_address;
  bool metrics_address_explicit = false;  // a non-loopback address only when the user named it
  std::chrono::milliseconds tick{1000};
  // Deep mode started by the detector; the profile's [detector] deep_seconds / deep_cooldown_s
  // override these.
  telemetry::DeepTriggerPolicy deep;
};
// What `spark-tune agent` sets from its options before the agent starts its services.
TelemetryServiceOptions& telemetry_service_options();

class TelemetryService : public Service {
 public:
  explicit TelemetryService(TelemetryServiceOptions o = telemetry_service_options()) : opt_(std::move(o)) {}
  std::string name() const override { return "telemetry"; }
  Result<void> on_start(ServiceContext& ctx) override;
  std::vector<pollfd> poll_fds() override;
  void on_ready(int fd, Clock::time_point now) override;
  std::optional<Clock::time_point> next_timer() override;
  void on_timer(Clock::time_point now) override;
  void on_stop() override;

  uint16_t metrics_port() const { return http_ ? http_->port() : 0; }

 private:
  void advance();
  // Into the agent's event log: the detector's event, numbered there (a deep report's trigger
  // names the log's seq of its cause).
  void publish(const telemetry::DetectedEvent& d);

  // The holders of telemetry.deep {"hold": true}: answered when the period reports; an asked
  // period whose holders have all gone ends early.
  struct DeepHolder {
    DeferredReply to;
    uint64_t reports_before = 0;
    bool joined = false;
  };
  void answer_deep_holders(bool stopping);
  void drop_gone_deep_holders();

  TelemetryServiceOptions opt_;
  ServiceContext* ctx_ = nullptr;
  std::vector<DeepHolder> deep_holders_;
  bool deep_unheld_asker_ = false;  // someone asked for the running period without holding it open
  std::unique_ptr<telemetry::TelemetryHub> hub_;
  std::unique_ptr<MetricsHttpServer> http_;
  const telemetry::TelemetryInterval* last_interval_ = nullptr;
  uint64_t frame_seq_ = 0;
  std::map<uint64_t, uint64_t> log_seq_of_;  // the hub's seq -> the log's, for the last few
  std::set<std::string> open_windows_;       // from the window events in the log
  bool step_error_logged_ = false;
  // A failed step (no descriptor left to read procfs, ...) is retried with backoff, never in a
  // tight loop: 100 ms doubling up to 5 s, back to the hub's own tick once a step succeeds.
  std::optional<std::chrono::steady_clock::time_point> retry_at_;
  std::chrono::milliseconds retry_backoff_{0};
  std::map<std::string, uint64_t> requests_;  // served, by request kind (telemetry.status)
};

}  // namespace spark::daemon
