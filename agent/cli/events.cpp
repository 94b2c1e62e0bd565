// spark-tune events [--source S] [--type T] [--subject X] [--wait TYPE] [--json] [--count N]
// [--timeout D]: the event stream (docs/events.md). From a running agent: every source (profile,
// window, guard, telemetry) out of its one event log. Without an agent: the telemetry detector in
// this process, with the same [detector] settings as the agent's.
#include <iostream>
#include <thread>

#include "cli/guard_wait.h"
#include "cli/registry.h"
#include "cli/telemetry_common.h"
#include "core/log.h"
#include "core/units.h"
#include "state/journal.h"
#include "telemetry/detector_policy.h"
#include "telemetry/hub.h"

using spark::state::read_journal;

using spark::telemetry::DetectorPolicy, spark::telemetry::StallThresholds, spark::telemetry::TelemetryHub,
    spark::telemetry::detector_policy;

namespace spark::cli {
namespace {

struct EventsOptions {
  int count = 0;
  std::string timeout;
  std::string wait;  // an event type: wait for one and exit (`events --wait server_ready --subject g1`)
  std::string source, type, subject;
  std::string guard;   // --guard ID: --source guard --subject ID (before issue 12)
  int64_t after = -1;  // --after SEQ: from the agent's log after this seq (default: from now)
  TelemetryCliOptions telemetry;
};

void print_event(const Context& ctx, const nlohmann::json& j) {
  if (ctx.json) {
    print_json(j);
    return;
  }
  std::time_t tt = static_cast<std::time_t>(j.value("time_ms", int64_t{0}) / 1000);
  std::tm tm{};
  ::localtime_r(&tt, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%H:%M:%S", &tm);
  std::string subject = j.value("subject", "");
  std::cout << when << " " << j.value("source", "") << " " << j.value("type", "")
            << (subject.empty() ? "" : " " + subject) << ": " << j.value("summary", "") << "\n";
  if (!j.value("hint", "").empty()) std::cout << "         hint: " << j.value("hint", "") << "\n";
  std::cout << std::flush;
}

// The longest single wait for events asked of the agent, and the pause between questions to an
// agent that does not wait.
constexpr std::chrono::milliseconds k_agent_wait{1000};
constexpr std::chrono::milliseconds k_agent_poll{50};

int events_from_agent(Context& ctx, const EventsOptions& o, const EventFilter& f, long pid,
                      std::optional<std::chrono::steady_clock::time_point> until) {
  log_info("events from the agent (pid " + std::to_string(pid) + "); --local runs the detector here instead");
  uint64_t cursor = 0;
  if (o.after >= 0) {
    cursor = static_cast<uint64_t>(o.after);
  } else {
    auto first = daemon::call(ctx.paths, "events.list", nlohmann::json::object());
    if (!first) return report_error(ctx, std::string("the agent's events: ") + first.error().what());
    cursor = first->value("next", uint64_t{0});
  }
  install_stop_handlers();
  int printed = 0;
  while (!stop_requested() && (o.count == 0 || printed < o.count)) {
    auto wait = k_agent_wait;
    if (until) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*until - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      wait = std::min(wait, left);
    }
    // A long-poll: the agent answers as soon as a matching event is there, or when the wait is over.
    auto asked = std::chrono::steady_clock::now();
    auto params = filter_params(f);
    params["after"] = cursor;
    params["wait_ms"] = wait.count();
    auto r = daemon::call(ctx.paths, "events.list", params, wait + std::chrono::seconds(5));
    if (!r) return report_error(ctx, std::string("the agent stopped answering: ") + r.error().what());
    // An agent that answers at once with nothing (it cannot wait): do not spin.
    if ((*r)["events"].empty() && std::chrono::steady_clock::now() - asked < wait / 2)
      std::this_thread::sleep_for(std::min(wait, k_agent_poll));
    if (uint64_t lost = r->value("dropped", uint64_t{0}); lost > 0)
      log_warning(std::to_string(lost) + " event(s) lost: the agent keeps the newest " +
                  std::to_string(r->value("capacity", 0)) + " (docs/events.md)");
    for (const auto& e : (*r)["events"]) {
      if (o.count > 0 && printed >= o.count) break;
      print_event(ctx, e);
      ++printed;
    }
    cursor = r->value("next", cursor);
  }
  return k_exit_ok;
}

// A load window is open (pagecache_flood is judged only then): the journal holds a window owner.
bool window_open(const HostPaths& paths) {
  auto j = read_journal(paths);
  if (!j) return false;
  for (const auto& owner : j->owner_names())
    if (owner.rfind("window:", 0) == 0) return true;
  return false;
}

// No agent: the detector here, its events numbered by a log of this process (the same shape and
// filters as the agent's).
int events_local(Context& ctx, const EventsOptions& o, const EventFilter& f,
                 std::optional<std::chrono::steady_clock::time_point> until) {
  if (o.after >= 0) return report_error(ctx, "--after reads the agent's log, and no agent answers");
  if (f.source && *f.source != EventSource::telemetry)
    return report_error(ctx, std::string(event_source_name(*f.source)) +
                                 " events come from the agent, and none answers: start it (spark-tune agent)");
  DetectorPolicy policy = detector_policy(ctx.paths);
  // --stall overrides the profile's detector.stall_ms; otherwise both paths use the profile's.
  auto source_r = make_source(ctx, o.telemetry, policy.probe_stall);
  if (!source_r.ok()) return report_error(ctx, source_r.error().what());
  auto source = std::move(source_r).value();
  // Said with --json too (on stderr): a script knows when the probes watch.
  if (!source->has_probes())
    log_warning(source->probe_status());
  else if (ctx.json)
    std::cerr << "spark-tune: " << source->probe_status() << std::endl;  // --json keeps only warnings in the log
  else
    log_info(source->probe_status());
  install_stop_handlers();

  StallThresholds thresholds = policy.thresholds;
  thresholds.task_stall =
      std::chrono::duration_cast<std::chrono::milliseconds>(source->options().probes.stall_threshold);
  TelemetryHub hub(std::move(source), thresholds);
  EventLog log;
  int printed = 0;
  bool wait_seen = false;
  log.on_append([&](const Event& e) {
    if (!f.matches(e) || (o.count > 0 && printed >= o.count) || wait_seen) return;
    if (o.wait.empty())
      print_event(ctx, e.to_json());
    else
      print_json(e.to_json());
    ++printed;
    if (!o.wait.empty()) wait_seen = true;
  });
  while (!stop_requested() && !wait_seen && (o.count == 0 || printed < o.count)) {
    auto wait = std::chrono::milliseconds(1000);
    if (until) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*until - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      wait = std::min(wait, left);
    }
    hub.set_window_open(window_open(ctx.paths));
    auto step = hub.step(wait);
    if (!step.ok()) return report_error(ctx, step.error().what());
    for (const auto& d : step->events) {
      Event e = d;
      e.seq = 0;  // numbered by this process's log
      log.append(std::move(e));
    }
  }
  if (!o.wait.empty() && !wait_seen) {
    if (!ctx.json) std::cerr << "spark-tune: no " << o.wait << " before the timeout" << std::endl;
    return k_exit_check;
  }
  return k_exit_ok;
}

// A running agent's event log, when the options allow it (the telemetry options that configure
// probes read locally): its pid, or nullopt.
std::optional<long> agent_for_events(const Context& ctx, const TelemetryCliOptions& o) {
  if (o.local || o.no_bpf || !o.probe_kinds.empty() || !o.stall.empty()) return std::nullopt;
  if (ctx.paths.proc != HostPaths::system().proc) return std::nullopt;
  auto ping = daemon::call(ctx.paths, "agent.ping", nlohmann::json::object(), std::chrono::milliseconds(2000));
  if (!ping) return std::nullopt;
  auto services = ping->value("services", nlohmann::json::array());
  if (std::find(services.begin(), services.end(), "events") == services.end()) return std::nullopt;
  return ping->value("pid", 0L);
}

int run_events(Context& ctx, EventsOptions o) {
  if (o.count < 0) return report_error(ctx, "--count: give a number of events, 0 for no limit");
  EventFilter f;
  if (!o.guard.empty()) {
    if (!o.source.empty() && o.source != "guard") return report_error(ctx, "--guard goes with --source guard");
    if (!o.subject.empty() && o.subject != o.guard) return report_error(ctx, "give --guard or --subject, not both");
    o.source = "guard";
    o.subject = o.guard;
  }
  if (!o.source.empty()) {
    f.source = parse_event_source(o.source);
    if (!f.source) return report_error(ctx, "--source: one of profile, window, guard, telemetry");
  }
  if (!o.wait.empty() && !o.type.empty() && o.wait != o.type)
    return report_error(ctx, "--wait names the type to wait for: give --wait or --type, not two types");
  f.type = o.wait.empty() ? o.type : o.wait;
  f.subject = o.subject;
  if (!f.type.empty() && !(f.source ? known_event_type(*f.source, f.type) : known_event_type(f.type))) {
    std::string types;
    for (const auto& t : event_types())
      if (!f.source || t.source == *f.source)
        if (types.find(std::string(t.type) + ",") == std::string::npos) types += std::string(t.type) + ", ";
    return report_error(ctx, "no event type '" + f.type + "'" +
                                 (f.source ? std::string(" from ") + event_source_name(*f.source) : "") + ": one of " +
                                 types.substr(0, types.size() - 2));
  }
  if (o.after >= 0 && !o.wait.empty()) return report_error(ctx, "--after goes with the stream, not with --wait");
  std::optional<std::chrono::steady_clock::time_point> until;
  if (!o.wait.empty() || !o.timeout.empty()) {
    auto t = parse_duration(o.timeout.empty() ? "60s" : o.timeout);
    if (!t.ok()) return report_error(ctx, "--timeout: give a duration, e.g. 30s or 5m");
    until = std::chrono::steady_clock::now() + *t;
    auto pid = agent_for_events(ctx, o.telemetry);
    if (!o.wait.empty() && pid) return wait_event(ctx, f, *t);
    if (!o.wait.empty() &&
        !(f.source == EventSource::telemetry || (!f.source && known_event_type(EventSource::telemetry, f.type))))
      return wait_event(ctx, f, *t);  // an agent's event: says that none answers
    if (pid) return events_from_agent(ctx, o, f, *pid, until);
    return events_local(ctx, o, f, until);
  }
  if (auto pid = agent_for_events(ctx, o.telemetry)) return events_from_agent(ctx, o, f, *pid, until);
  return events_local(ctx, o, f, until);
}

void setup(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<EventsOptions>();
  auto* sub =
      app.add_subcommand("events", "the event stream: profiles, load windows, guards, telemetry (docs/events.md)");
  sub->add_option("--source", opts->source, "only events of this source: profile, window, guard, telemetry");
  sub->add_option("--type", opts->type, "only events of this type (e.g. oom_kill, window_end)");
  sub->add_option("--subject", opts->subject, "only events about this: a window id, a guard id, a pid");
  sub->add_option("--count", opts->count, "stop after N events (default: until interrupted)");
  sub->add_option("--timeout", opts->timeout, "stop after this long (e.g. 30s; with --wait default 60s)");
  sub->add_option("--wait", opts->wait,
                  "wait for one event of this type (with the other filters), print it as JSON and exit: "
                  "0 seen, 1 timeout");
  sub->add_option("--after", opts->after,
                  "start after this seq of the agent's log (what it still keeps comes first; default: from now)");
  sub->add_option("--guard", opts->guard, "only this guard's events (--source guard --subject ID)");
  add_telemetry_options(sub, opts->telemetry);
  sub->callback([&ctx, opts] { ctx.exit_code = run_events(ctx, *opts); });
}

const Verb k_verb{"events", 61, setup};

}  // namespace
}  // namespace spark::cli
