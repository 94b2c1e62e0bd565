// spark-tune events [--json] [--count N] [--timeout D]: the event stream (oom_kill,
// fragmentation_stall, reclaim_storm, pagecache_flood), each with evidence and a hint.
#include <iostream>
#include <thread>

#include "cli/registry.h"
#include "cli/telemetry_common.h"
#include "core/log.h"
#include "core/units.h"
#include "telemetry/hub.h"
#include "cli/guard_wait.h"

namespace spark::cli {
namespace {

struct EventsOptions {
  int count = 0;
  std::string timeout;
  std::string wait;   // a guard event type: wait for one and exit (`events --wait server_ready --guard ID`)
  std::string guard;
  TelemetryCliOptions telemetry;
};

// One event, from this process's hub or from the agent (to_json of a DetectedEvent either way).
void print_event(const Context& ctx, nlohmann::json j) {
  j.erase("seq");  // the agent's cursor, not part of the event
  if (ctx.json) {
    print_json(j);
    return;
  }
  std::time_t tt = static_cast<std::time_t>(j.value("time_ms", int64_t{0}) / 1000);
  std::tm tm{};
  ::localtime_r(&tt, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%H:%M:%S", &tm);
  std::cout << when << " " << j.value("event", "") << ": " << j.value("summary", "")
            << "\n         hint: " << j.value("hint", "") << std::endl;
}

// The longest single wait for events asked of the agent, and the pause between questions to an
// agent that does not wait.
constexpr std::chrono::milliseconds k_agent_wait{1000};
constexpr std::chrono::milliseconds k_agent_poll{50};

int events_from_agent(Context& ctx, const EventsOptions& o, long pid,
                      std::optional<std::chrono::steady_clock::time_point> until) {
  log_info("events from the agent (pid " + std::to_string(pid) + "); --local loads probes here instead");
  auto first = daemon::call(ctx.paths, "telemetry.events", nlohmann::json::object());
  if (!first) return report_error(ctx, std::string("the agent's events: ") + first.error().what());
  uint64_t cursor = first->value("next", uint64_t{0});
  install_stop_handlers();
  int printed = 0;
  while (!stop_requested() && (o.count == 0 || printed < o.count)) {
    auto wait = k_agent_wait;
    if (until) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*until - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      wait = std::min(wait, left);
    }
    // A long-poll: the agent answers as soon as an event is there, or when the wait is over.
    auto asked = std::chrono::steady_clock::now();
    auto r = daemon::call(ctx.paths, "telemetry.events", {{"after", cursor}, {"wait_ms", wait.count()}},
                          wait + std::chrono::seconds(5));
    if (!r) return report_error(ctx, std::string("the agent stopped answering: ") + r.error().what());
    // An agent that answers at once with nothing (it cannot wait): do not spin.
    if ((*r)["events"].empty() && std::chrono::steady_clock::now() - asked < wait / 2)
      std::this_thread::sleep_for(std::min(wait, k_agent_poll));
    if (uint64_t lost = r->value("dropped", uint64_t{0}); lost > 0)
      log_warning(std::to_string(lost) + " event(s) lost: the agent keeps a bounded backlog");
    for (const auto& e : (*r)["events"]) {
      if (o.count > 0 && printed >= o.count) break;
      print_event(ctx, e);
      ++printed;
    }
    cursor = r->value("next", cursor);
  }
  return k_exit_ok;
}

int run_events(Context& ctx, const EventsOptions& o) {
  if (o.count < 0) return report_error(ctx, "--count: give a number of events, 0 for no limit");
  if (!o.guard.empty() && o.wait.empty()) return report_error(ctx, "--guard goes with --wait TYPE");
  if (!o.wait.empty()) {
    auto t = parse_duration(o.timeout.empty() ? "60s" : o.timeout);
    if (!t.ok()) return report_error(ctx, "--timeout: give a duration, e.g. 30s or 5m");
    return wait_guard_event(ctx, o.wait, o.guard, *t);
  }
  std::optional<std::chrono::steady_clock::time_point> until;
  if (!o.timeout.empty()) {
    auto t = parse_duration(o.timeout);
    if (!t.ok()) return report_error(ctx, "--timeout: give a duration, e.g. 30s or 5m");
    until = std::chrono::steady_clock::now() + *t;
  }
  if (auto pid = agent_for_telemetry(ctx, o.telemetry)) return events_from_agent(ctx, o, *pid, until);
  auto source_r = make_source(ctx, o.telemetry);
  if (!source_r.ok()) return report_error(ctx, source_r.error().what());
  auto source = std::move(source_r).value();
  if (!source->has_probes())
    log_warning(source->probe_status());
  else if (!ctx.json)
    log_info(source->probe_status());
  install_stop_handlers();

  StallThresholds thresholds = thresholds_for(source->options());
  TelemetryHub hub(std::move(source), thresholds);
  int printed = 0;
  while (!stop_requested() && (o.count == 0 || printed < o.count)) {
    auto wait = std::chrono::milliseconds(1000);
    if (until) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*until - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      wait = std::min(wait, left);
    }
    auto step = hub.step(wait);
    if (!step.ok()) return report_error(ctx, step.error().what());
    for (const auto& e : step->events) {
      if (o.count > 0 && printed >= o.count) break;
      print_event(ctx, to_json(e));
      ++printed;
    }
  }
  return k_exit_ok;
}

void setup(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<EventsOptions>();
  auto* sub = app.add_subcommand(
      "events", "stream of memory events: oom_kill, fragmentation_stall, reclaim_storm, pagecache_flood");
  sub->add_option("--count", opts->count, "stop after N events (default: until interrupted)");
  sub->add_option("--timeout", opts->timeout, "stop after this long (e.g. 30s; with --wait default 60s)");
  sub->add_option("--wait", opts->wait,
                  "wait for one guard event (server_ready, oom_kill, memory_growth), print it and exit: 0 seen, 1 timeout");
  sub->add_option("--guard", opts->guard, "with --wait: only this guard's events");
  add_telemetry_options(sub, opts->telemetry);
  sub->callback([&ctx, opts] { ctx.exit_code = run_events(ctx, *opts); });
}

const Verb verb{"events", 61, setup};

}  // namespace
}  // namespace spark::cli
