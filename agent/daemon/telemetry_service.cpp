#include "daemon/telemetry_service.h"

#include <algorithm>

#include "core/log.h"
#include "core/units.h"
#include "state/journal.h"
#include "telemetry/detector_policy.h"
#include "telemetry/monitor_view.h"

using spark::state::read_journal;

using spark::telemetry::DeepReport, spark::telemetry::DeepTriggerPolicy, spark::telemetry::DetectedEvent,
    spark::telemetry::DetectorPolicy, spark::telemetry::LocalSourceOptions, spark::telemetry::LocalTelemetrySource,
    spark::telemetry::MonitorFrame, spark::telemetry::StallThresholds, spark::telemetry::TelemetryHub,
    spark::telemetry::deep_json, spark::telemetry::detector_policy, spark::telemetry::monitor_text;

namespace spark::daemon {

TelemetryServiceOptions& telemetry_service_options() {
  static TelemetryServiceOptions o;
  return o;
}

namespace {

std::string endpoint_url(const std::string& address, uint16_t port) {
  bool v6 = address.find(':') != std::string::npos && address.front() != '[';
  return "http://" + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port) + "/metrics";
}
}  // namespace

Result<void> TelemetryService::on_start(ServiceContext& ctx) {
  ctx_ = &ctx;
  LocalSourceOptions lo;
  // A fixture tree is not the kernel the probes would watch.
  lo.use_bpf = opt_.use_bpf && ctx.paths().proc == HostPaths::system().proc;
  // Detector thresholds from the policy: the applied profile's [detector] table, else built-in
  // (the same function as `spark-tune events` without an agent).
  DetectorPolicy policy = detector_policy(ctx.paths(), opt_.deep);
  lo.probes.stall_threshold = policy.probe_stall;
  DeepTriggerPolicy deep = policy.deep;
  auto source = LocalTelemetrySource::create(ctx.paths(), lo);
  // Said once, at start: the probes stay as they are for the agent's lifetime.
  if (source->has_probes())
    log_info("telemetry: " + source->probe_status());
  else
    log_warning("telemetry: " + source->probe_status() + " (the agent runs on procfs alone)");
  StallThresholds t = policy.thresholds;
  bool can_deep = source->has_probes();
  // The probes report OOM victims: a guard's oom_kill waits briefly for theirs (one event).
  if (source->has_probes()) ctx.events().set_probes_active([] { return true; });
  hub_ = std::make_unique<TelemetryHub>(std::move(source), t, opt_.tick, 20);
  // Deep mode on a fragmentation_stall / reclaim_storm, for a bounded period, then a cooldown.
  if (can_deep && deep.period.count() > 0) {
    hub_->set_deep_trigger(deep);
    log_info("telemetry: the detector attaches deep mode for " + format_duration(deep.period) + " on " +
             "fragmentation_stall or reclaim_storm, at most once per " + format_duration(deep.cooldown));
  }
  // pagecache_flood is judged while a load window is open: which are open comes from the window
  // events in the log (begin, resume, end); the windows resumed before this service started are
  // those in the journal now.
  if (auto j = read_journal(ctx.paths()); j)
    for (const auto& owner : j->owner_names())
      if (owner.rfind("window:", 0) == 0) open_windows_.insert(owner.substr(7));
  ctx.events().on_append([this](const Event& e) {
    if (e.source != EventSource::window) return;
    if (e.type == "window_begin" || e.type == "window_resume") open_windows_.insert(e.subject);
    if (e.type == "window_end") open_windows_.erase(e.subject);
  });
  // The baseline sample, so the first tick yields a frame.
  SPARK_TRY_VOID(hub_->step(std::chrono::milliseconds(0)));

  if (opt_.metrics_port != 0) {
    SPARK_TRY(auto addr, parse_listen_address(opt_.metrics_address, opt_.metrics_port));
    if (!addr.loopback && !opt_.metrics_address_explicit)
      return input_error("refusing to serve /metrics on non-loopback " + opt_.metrics_address +
                         " without an explicit --metrics-address");
    // The telemetry figures and the event log's counters (spark_tune_events_total...).
    auto http = MetricsHttpServer::listen(opt_.metrics_address, opt_.metrics_port,
                                          [this] { return hub_->metrics() + ctx_->events().metrics_text(); });
    if (!http) {
      // Telemetry over the socket still works; the endpoint is what is missing.
      log_warning("telemetry: /metrics not served: " + describe(http.error()));
    } else {
      http_ = std::move(http).value();
      if (!addr.loopback) log_warning("telemetry: /metrics served on non-loopback " + opt_.metrics_address);
      log_info("telemetry: /metrics on " + endpoint_url(opt_.metrics_address, http_->port()));
    }
  }

  SPARK_TRY_VOID(ctx.add_handler("telemetry.sample", [this](const json& params, const Peer&) -> Result<json> {
    ++requests_["sample"];
    json out{{"seq", frame_seq_}, {"probe_status", hub_->source().probe_status()}};
    out["frame"] = hub_->latest_json();
    // deep_after: the caller waits for a deep report newer than that many (monitor --deep).
    std::optional<DeepReport> deep;
    if (params.contains("deep_after")) {
      if (!params["deep_after"].is_number_unsigned() && !params["deep_after"].is_number_integer())
        return input_error("telemetry.sample: deep_after is the reports count telemetry.deep answered");
      if (hub_->deep_reports() > params["deep_after"].get<uint64_t>() && hub_->last_deep_report()) {
        deep = *hub_->last_deep_report();
        out["deep_reports"] = hub_->deep_reports();
        if (out["frame"].is_object()) out["frame"]["deep"] = deep_json(*deep);
      }
    }
    if (params.contains("width") && last_interval_) {
      if (!params["width"].is_number_integer()) return input_error("telemetry.sample: width is a number of columns");
      MonitorFrame f;
      f.interval = last_interval_;
      f.probe_status = hub_->source().probe_status();
      f.events = hub_->last_interval_events();
      f.recent.assign(hub_->recent().begin(), hub_->recent().end());
      f.deep = deep;
      int width = std::clamp(params["width"].get<int>(), 20, 1000);
      out["text"] = monitor_text(f, width);
    }
    return out;
  }));
  SPARK_TRY_VOID(ctx.add_handler("telemetry.deep", [this](const json& params, const Peer& peer) -> Result<json> {
    ++requests_["deep"];
    if (!params.contains("seconds") || !params["seconds"].is_number() || params["seconds"].get<double>() <= 0 ||
        params["seconds"].get<double>() > 600)
      return input_error("telemetry.deep: seconds is the period, more than 0 and at most 600");
    auto period = std::chrono::milliseconds(static_cast<int64_t>(params["seconds"].get<double>() * 1000));
    if (params.contains("hold") && !params["hold"].is_boolean())
      return input_error("telemetry.deep: hold is true or false");
    std::string who = params.value("who", std::string("a client")) + " (uid " + std::to_string(peer.uid) + ")";
    uint64_t before = hub_->deep_reports();
    if (!hub_->deep_trigger().running()) deep_unheld_asker_ = false;  // a new period: no asker yet
    SPARK_TRY(auto started, hub_->start_deep(period, who));
    if (params.value("hold", false)) {
      if (auto to = ctx_->defer()) {
        deep_holders_.push_back({*to, before, started.joined});
        return json(nullptr);
      }
    }
    deep_unheld_asker_ = true;  // nobody to watch: this period runs its length
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(started.until - Clock::now());
    return json{{"period_ms", period.count()},
                {"reports", before},
                {"joined", started.joined},
                {"ends_in_ms", std::max<int64_t>(left.count(), 0)}};
  }));
  SPARK_TRY_VOID(ctx.add_handler("telemetry.metrics", [this](const json&, const Peer&) -> Result<json> {
    ++requests_["metrics"];
    return json{{"text", hub_->metrics() + ctx_->events().metrics_text()}};
  }));
  SPARK_TRY_VOID(ctx.add_handler("telemetry.status", [this](const json&, const Peer&) -> Result<json> {
    auto [on, total] = hub_->source().probe_counts();
    json out{{"probe_status", hub_->source().probe_status()},
             {"probes", hub_->source().probe_details()},
             {"probes_attached", on},
             {"probes_total", total},
             {"events_total", hub_->totals()},
             {"deep",
              {{"attached", hub_->source().deep_attached()},
               {"period_ms", hub_->deep_trigger().policy().period.count()},
               {"cooldown_ms", hub_->deep_trigger().policy().cooldown.count()},
               {"reports", hub_->last_deep_report().has_value()}}},
             {"requests", requests_}};
    out["metrics"] = http_ ? json(endpoint_url(opt_.metrics_address, http_->port())) : json(nullptr);
    return out;
  }));
  return {};
}

namespace {

// The detector's event as the log keeps it: the hub's number goes, the log gives its own.
Event as_event(const DetectedEvent& d) {
  Event e = d;
  e.source = EventSource::telemetry;
  e.seq = 0;
  if (!e.data.is_object()) e.data = json::object();
  return e;
}

}  // namespace

void TelemetryService::publish(const DetectedEvent& d) {
  Event e = as_event(d);
  if (e.type == "deep_report" && e.data.contains("trigger") && e.data["trigger"].is_object()) {
    uint64_t hub_seq = e.data["trigger"].value("seq", uint64_t{0});
    if (auto it = log_seq_of_.find(hub_seq); it != log_seq_of_.end()) {
      e.data["trigger"]["seq"] = it->second;
      std::string from = "#" + std::to_string(hub_seq), to = "#" + std::to_string(it->second);
      if (auto at = e.summary.find(from); at != std::string::npos) e.summary.replace(at, from.size(), to);
    }
  }
  uint64_t seq = ctx_->events().append(std::move(e));
  if (d.seq && seq) {
    log_seq_of_[d.seq] = seq;
    while (log_seq_of_.size() > 64) log_seq_of_.erase(log_seq_of_.begin());
  }
}

void TelemetryService::answer_deep_holders(bool stopping) {
  if (deep_holders_.empty()) return;
  if (hub_ && hub_->deep_trigger().running() && !stopping) return;
  for (const auto& h : deep_holders_) {
    if (hub_ && hub_->deep_reports() > h.reports_before && hub_->last_deep_report())
      ctx_->reply(h.to, json{{"report", deep_json(*hub_->last_deep_report())},
                             {"reports", hub_->deep_reports()},
                             {"joined", h.joined}});
    else
      ctx_->reply(h.to, sys_error(stopping ? ESHUTDOWN : EIO,
                                  stopping ? "the agent is stopping: deep mode detached without a report"
                                           : "deep mode ended without a report (see the agent's log)"));
  }
  deep_holders_.clear();
}

void TelemetryService::drop_gone_deep_holders() {
  if (deep_holders_.empty()) return;
  std::erase_if(deep_holders_, [this](const DeepHolder& h) { return !ctx_->connected(h.to); });
  // The last holder of an asked period has gone (monitor --deep stopped with Ctrl-C): it ends now.
  if (deep_holders_.empty() && !deep_unheld_asker_ && hub_->end_asked_deep()) advance();
}

void TelemetryService::advance() {
  auto step = hub_->step(std::chrono::milliseconds(0));
  if (!step) {
    retry_backoff_ = std::clamp(retry_backoff_ * 2, std::chrono::milliseconds(100), std::chrono::milliseconds(5000));
    retry_at_ = Clock::now() + retry_backoff_;
    if (!step_error_logged_) log_warning("telemetry: " + describe(step.error()) + " (retrying with backoff up to 5 s)");
    step_error_logged_ = true;
    return;
  }
  step_error_logged_ = false;
  retry_at_.reset();
  retry_backoff_ = std::chrono::milliseconds(0);
  for (const auto& e : step->events) publish(e);
  if (step->interval) {
    last_interval_ = step->interval;
    ++frame_seq_;
  }
  answer_deep_holders(false);
}

std::vector<pollfd> TelemetryService::poll_fds() {
  std::vector<pollfd> fds;
  if (hub_) fds = hub_->source().poll_fds();
  if (http_)
    for (int fd : http_->poll_fds()) fds.push_back({fd, POLLIN | POLLPRI, 0});
  return fds;
}

void TelemetryService::on_ready(int fd, Clock::time_point now) {
  if (http_ && http_->owns(fd)) {
    http_->on_ready(fd, now);
    return;
  }
  if (!hub_) return;
  hub_->source().on_ready(fd, now);
  advance();
}

std::optional<Clock::time_point> TelemetryService::next_timer() {
  if (!hub_) return std::nullopt;
  Clock::time_point t = hub_->next_tick();
  if (retry_at_) t = std::max(t, *retry_at_);
  if (http_)
    if (auto h = http_->next_timer()) t = std::min(t, *h);
  return t;
}

void TelemetryService::on_timer(Clock::time_point now) {
  if (http_) http_->on_timer(now);
  if (hub_) drop_gone_deep_holders();
  if (hub_ && now >= hub_->next_tick() && (!retry_at_ || now >= *retry_at_)) {
    hub_->set_window_open(!open_windows_.empty());
    advance();
  }
}

void TelemetryService::on_stop() {
  answer_deep_holders(true);
  http_.reset();
  hub_.reset();  // probes detach
  last_interval_ = nullptr;
}

}  // namespace spark::daemon
