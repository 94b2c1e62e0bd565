#include "daemon/telemetry_service.h"

#include <algorithm>

#include "core/log.h"
#include "core/units.h"
#include "profile/profile_options.h"
#include "state/journal.h"
#include "telemetry/monitor_view.h"

namespace spark::daemon {

TelemetryServiceOptions& telemetry_service_options() {
  static TelemetryServiceOptions o;
  return o;
}

namespace {
constexpr std::chrono::milliseconds k_max_wait{10'000};
constexpr size_t k_max_waiters = 64;

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
  // Detector thresholds from the policy: the applied profile's [detector] table, else built-in.
  std::optional<double> flood_gib_per_s;
  DeepTriggerPolicy deep = opt_.deep;
  if (auto po = profile_options(ctx.paths(), std::nullopt); po) {
    for (auto [key, field] : {std::pair{"detector.deep_seconds", &deep.period},
                              std::pair{"detector.deep_cooldown_s", &deep.cooldown}})
      if (auto v = po->get(key)) {
        std::string why;
        if (auto ms = parse_policy_seconds(*v, &why))
          *field = *ms;
        else
          log_warning(std::string("telemetry: ") + key + " " + why + "; using the default");
      }
    if (auto v = po->get("detector.stall_ms")) {
      try {
        // Fractions allowed ("0.05" = 50 us); the probes take nanoseconds.
        size_t used = 0;
        double ms = std::stod(*v, &used);
        if (used != v->size() || !(ms > 0) || ms > 3.6e6) throw std::invalid_argument(*v);
        lo.probes.stall_threshold = std::chrono::nanoseconds(static_cast<int64_t>(ms * 1e6));
      } catch (...) {
        log_warning("telemetry: detector.stall_ms '" + *v + "' is not a number of milliseconds; using the default");
      }
    }
    if (auto v = po->get("detector.flood_gib_per_s")) {
      try {
        flood_gib_per_s = std::stod(*v);
      } catch (...) {
        log_warning("telemetry: detector.flood_gib_per_s '" + *v + "' is not a number; using the default");
      }
    }
  }
  auto source = LocalTelemetrySource::create(ctx.paths(), lo);
  // Said once, at start: the probes stay as they are for the agent's lifetime.
  if (source->has_probes())
    log_info("telemetry: " + source->probe_status());
  else
    log_warning("telemetry: " + source->probe_status() + " (the agent runs on procfs alone)");
  StallThresholds t;
  t.task_stall = std::chrono::duration_cast<std::chrono::milliseconds>(lo.probes.stall_threshold);
  if (flood_gib_per_s && *flood_gib_per_s > 0)
    t.pagecache_growth_bytes_per_s = static_cast<uint64_t>(*flood_gib_per_s * static_cast<double>(1ull << 30));
  // The agent knows when a load window is open (on_timer): a flood is judged during windows only.
  t.pagecache_only_in_window = true;
  bool can_deep = source->has_probes();
  hub_ = std::make_unique<TelemetryHub>(std::move(source), t, opt_.tick, 20);
  // Deep mode on a fragmentation_stall / reclaim_storm, for a bounded period, then a cooldown.
  if (can_deep && deep.period.count() > 0) {
    hub_->set_deep_trigger(deep);
    log_info("telemetry: the detector attaches deep mode for " + format_duration(deep.period) + " on " +
             "fragmentation_stall or reclaim_storm, at most once per " + format_duration(deep.cooldown));
  }
  // The baseline sample, so the first tick yields a frame.
  SPARK_TRY_VOID(hub_->step(std::chrono::milliseconds(0)));

  if (opt_.metrics_port != 0) {
    SPARK_TRY(auto addr, parse_listen_address(opt_.metrics_address, opt_.metrics_port));
    if (!addr.loopback && !opt_.metrics_address_explicit)
      return input_error("refusing to serve /metrics on non-loopback " + opt_.metrics_address +
                         " without an explicit --metrics-address");
    auto http = MetricsHttpServer::listen(opt_.metrics_address, opt_.metrics_port, [this] { return hub_->metrics(); });
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
  SPARK_TRY_VOID(ctx.add_handler("telemetry.events", [this](const json& params, const Peer&) -> Result<json> {
    ++requests_["events"];
    std::optional<uint64_t> after;
    if (params.contains("after") && !params["after"].is_null()) {
      if (!params["after"].is_number_unsigned() && !params["after"].is_number_integer())
        return input_error("telemetry.events: after is the cursor of an earlier answer");
      after = params["after"].get<uint64_t>();
    }
    json out = events_after(after);
    int64_t wait_ms = 0;
    if (params.contains("wait_ms")) {
      if (!params["wait_ms"].is_number_integer() || params["wait_ms"].get<int64_t>() < 0)
        return input_error("telemetry.events: wait_ms is a number of milliseconds");
      wait_ms = std::min<int64_t>(params["wait_ms"].get<int64_t>(), k_max_wait.count());
    }
    if (after && out["events"].empty() && wait_ms > 0 && waiters_.size() < k_max_waiters) {
      if (auto to = ctx_->defer()) {
        waiters_.push_back({*to, *after, Clock::now() + std::chrono::milliseconds(wait_ms)});
        return json(nullptr);
      }
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
    return json{{"text", hub_->metrics()}};
  }));
  SPARK_TRY_VOID(ctx.add_handler("telemetry.status", [this](const json&, const Peer&) -> Result<json> {
    auto [on, total] = hub_->source().probe_counts();
    json out{{"probe_status", hub_->source().probe_status()},
             {"probes", hub_->source().probe_details()},
             {"probes_attached", on},
             {"probes_total", total},
             {"events_total", hub_->totals()},
             {"deep", {{"attached", hub_->source().deep_attached()},
                       {"period_ms", hub_->deep_trigger().policy().period.count()},
                       {"cooldown_ms", hub_->deep_trigger().policy().cooldown.count()},
                       {"reports", hub_->last_deep_report().has_value()}}},
             {"requests", requests_}};
    out["metrics"] = http_ ? json(endpoint_url(opt_.metrics_address, http_->port())) : json(nullptr);
    return out;
  }));
  return {};
}

void TelemetryService::answer_waiters(bool all, Clock::time_point now) {
  std::vector<Waiter> keep;
  for (auto& w : waiters_) {
    json out = events_after(w.after);
    if (all || !out["events"].empty() || now >= w.deadline)
      ctx_->reply(w.to, std::move(out));
    else
      keep.push_back(std::move(w));
  }
  waiters_.swap(keep);
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

json TelemetryService::events_after(std::optional<uint64_t> after) const {
  json out{{"next", event_seq_}, {"events", json::array()}, {"dropped", 0}};
  if (!after) return out;
  uint64_t first_kept = events_.empty() ? event_seq_ + 1 : events_.front().first;
  if (*after + 1 < first_kept) out["dropped"] = first_kept - *after - 1;
  for (const auto& [seq, e] : events_)
    if (seq > *after) out["events"].push_back(e);
  return out;
}

void TelemetryService::advance() {
  auto step = hub_->step(std::chrono::milliseconds(0));
  if (!step) {
    if (!step_error_logged_) log_warning("telemetry: " + describe(step.error()));
    step_error_logged_ = true;
    return;
  }
  step_error_logged_ = false;
  for (const auto& e : step->events) {
    json j = to_json(e);
    // The hub numbers its events (a deep_report names its trigger by that number).
    event_seq_ = e.seq ? e.seq : event_seq_ + 1;
    j["seq"] = event_seq_;
    events_.emplace_back(event_seq_, std::move(j));
    while (events_.size() > opt_.keep_events) events_.pop_front();
  }
  if (!step->events.empty() && !waiters_.empty()) answer_waiters(false, Clock::now());
  if (step->interval) {
    last_interval_ = step->interval;
    ++frame_seq_;
  }
  answer_deep_holders(false);
}

std::vector<int> TelemetryService::poll_fds() {
  std::vector<int> fds;
  if (hub_) fds = hub_->source().wait_fds();
  if (http_) {
    auto h = http_->poll_fds();
    fds.insert(fds.end(), h.begin(), h.end());
  }
  return fds;
}

void TelemetryService::on_ready(int fd, Clock::time_point now) {
  if (http_ && http_->owns(fd)) {
    http_->on_ready(fd, now);
    return;
  }
  if (!hub_) return;
  hub_->source().mark_ready(fd);
  advance();
}

std::optional<Clock::time_point> TelemetryService::next_timer() {
  if (!hub_) return std::nullopt;
  Clock::time_point t = hub_->next_tick();
  if (http_)
    if (auto h = http_->next_timer()) t = std::min(t, *h);
  for (const auto& w : waiters_) t = std::min(t, w.deadline);
  return t;
}

namespace {

// Whether a load window is open: the journal (the window service's record) holds a window owner.
// pagecache_flood is judged only then. One small read per tick, no coupling between services.
bool load_window_open(const HostPaths& paths) {
  auto j = read_journal(paths);
  if (!j) return false;
  for (const auto& owner : j->owner_names())
    if (owner.rfind("window:", 0) == 0) return true;
  return false;
}

}  // namespace

void TelemetryService::on_timer(Clock::time_point now) {
  if (http_) http_->on_timer(now);
  if (hub_) drop_gone_deep_holders();
  if (hub_ && now >= hub_->next_tick()) {
    hub_->set_window_open(load_window_open(ctx_->paths()));
    advance();
  }
  if (!waiters_.empty()) answer_waiters(false, now);
}

void TelemetryService::on_stop() {
  answer_waiters(true, Clock::now());
  answer_deep_holders(true);
  http_.reset();
  hub_.reset();  // probes detach
  last_interval_ = nullptr;
}

}  // namespace spark::daemon
