// spark-tune events [--json] [--count N] [--timeout D]: the event stream (oom_kill,
// fragmentation_stall, reclaim_storm, pagecache_flood), each with evidence and a hint.
#include <iostream>

#include "cli/registry.h"
#include "cli/telemetry_common.h"
#include "core/log.h"
#include "core/units.h"
#include "telemetry/stall_detector.h"

namespace spark::cli {
namespace {

struct EventsOptions {
  int count = 0;
  std::string timeout;
  TelemetryCliOptions telemetry;
};

void print_event(const Context& ctx, const DetectedEvent& e) {
  if (ctx.json) {
    print_json(to_json(e));
    return;
  }
  std::time_t tt = std::chrono::system_clock::to_time_t(e.at);
  std::tm tm{};
  ::localtime_r(&tt, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%H:%M:%S", &tm);
  std::cout << when << " " << e.kind << ": " << e.summary << "\n         hint: " << e.hint << std::endl;
}

int run_events(Context& ctx, const EventsOptions& o) {
  if (o.count < 0) return report_error(ctx, "--count: give a number of events, 0 for no limit");
  std::optional<std::chrono::steady_clock::time_point> until;
  if (!o.timeout.empty()) {
    auto t = parse_duration(o.timeout);
    if (!t.ok()) return report_error(ctx, "--timeout: give a duration, e.g. 30s or 5m");
    until = std::chrono::steady_clock::now() + *t;
  }
  auto source_r = make_source(ctx, o.telemetry);
  if (!source_r.ok()) return report_error(ctx, source_r.error().what());
  auto source = std::move(source_r).value();
  if (!source->has_probes()) log_warning(source->probe_status());
  else if (!ctx.json) log_info(source->probe_status());
  install_stop_handlers();

  StallDetector detector;
  int printed = 0;
  auto done = [&] { return stop_requested() || (o.count > 0 && printed >= o.count); };
  auto prev = source->sample();
  if (!prev.ok()) return report_error(ctx, prev.error().what());
  // OOM victims and long stalls go out the moment the ring buffer delivers them; the sampled
  // signals (buddyinfo, vmstat rates, PSI, page cache) are checked once a second.
  const auto tick = std::chrono::seconds(1);
  auto next_sample = std::chrono::steady_clock::now() + tick;
  uint64_t oom_seen_this_tick = 0;
  while (!done()) {
    auto now = std::chrono::steady_clock::now();
    if (until && now >= *until) break;
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_sample - now);
    if (until) wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(*until - now));
    if (wait.count() > 0) {
      auto r = source->poll_events(wait, [&](const MmEvent& e) {
        if (done()) return;
        if (auto d = detector.on_event(e, std::chrono::system_clock::now())) {
          if (d->kind == "oom_kill") ++oom_seen_this_tick;
          print_event(ctx, *d);
          ++printed;
        }
      });
      if (!r.ok()) return report_error(ctx, r.error().what());
      continue;
    }
    auto cur = source->sample();
    if (!cur.ok()) return report_error(ctx, cur.error().what());
    TelemetryInterval iv = interval_between(*prev, *cur);
    // OOM kills were reported as they came; the sampled pass only adds what the probes missed.
    for (const auto& d : detector.feed(iv, {})) {
      if (done()) break;
      if (d.kind == "oom_kill" && d.evidence.contains("vmstat_oom_kill") &&
          d.evidence["vmstat_oom_kill"].get<uint64_t>() <= oom_seen_this_tick)
        continue;
      print_event(ctx, d);
      ++printed;
    }
    oom_seen_this_tick = 0;
    prev = std::move(cur);
    next_sample += tick;
  }
  return k_exit_ok;
}

void setup(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<EventsOptions>();
  auto* sub = app.add_subcommand("events", "stream of memory events: oom_kill, fragmentation_stall, reclaim_storm, pagecache_flood");
  sub->add_option("--count", opts->count, "stop after N events (default: until interrupted)");
  sub->add_option("--timeout", opts->timeout, "stop after this long (e.g. 30s)");
  add_telemetry_options(sub, opts->telemetry);
  sub->callback([&ctx, opts] { ctx.exit_code = run_events(ctx, *opts); });
}

const Verb verb{"events", 61, setup};

}  // namespace
}  // namespace spark::cli
