// spark-tune monitor [--interval 1s] [--count N] [--json] [--deep S]: the live fragmentation view.
#include <sys/ioctl.h>
#include <unistd.h>

#include <deque>
#include <map>
#include <tuple>
#include <iostream>
#include <thread>

#include "cli/registry.h"
#include "cli/telemetry_common.h"
#include "core/log.h"
#include "core/units.h"
#include "telemetry/metrics.h"
#include "telemetry/monitor_view.h"
#include "telemetry/stall_detector.h"

namespace spark::cli {
namespace {

struct MonitorOptions {
  std::string interval = "1s";
  int count = 0;
  std::string deep;
  bool prometheus = false;
  TelemetryCliOptions telemetry;
};

int terminal_width() {
  winsize w{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 20) return w.ws_col;
  return 100;
}

int run_monitor(Context& ctx, const MonitorOptions& o) {
  auto interval = parse_duration(o.interval);
  if (!interval.ok() || interval->count() < 100)
    return report_error(ctx, "--interval: give a duration of at least 100ms, e.g. 1s or 500ms");
  if (o.count < 0) return report_error(ctx, "--count: give a number of samples, 0 for no limit");
  std::optional<std::chrono::milliseconds> deep_for;
  if (!o.deep.empty()) {
    auto d = parse_duration(o.deep);
    if (!d.ok() || d->count() <= 0) return report_error(ctx, "--deep: give a duration in seconds, e.g. 5 or 10s");
    deep_for = *d;
  }
  auto source_r = make_source(ctx, o.telemetry);
  if (!source_r.ok()) return report_error(ctx, source_r.error().what());
  auto source = std::move(source_r).value();
  if (!source->has_probes()) log_warning(source->probe_status());
  std::optional<DeepProbe> deep;
  if (deep_for) {
    if (!source->has_probes()) return report_error(ctx, "--deep needs eBPF: " + source->probe_status());
    auto d = DeepProbe::start(ctx.paths, {});
    if (!d.ok()) return report_error(ctx, std::string("--deep: ") + d.error().what());
    deep.emplace(std::move(d).value());
  }
  auto deep_started = std::chrono::steady_clock::now();

  install_stop_handlers();
  StallDetector detector;
  std::deque<DetectedEvent> recent;
  std::map<std::string, uint64_t> detected_totals;
  bool tty = ::isatty(STDOUT_FILENO) && !ctx.json;
  auto prev = source->sample();
  if (!prev.ok()) return report_error(ctx, prev.error().what());
  for (int n = 0; (o.count == 0 || n < o.count) && !stop_requested(); ++n) {
    std::vector<MmEvent> events;
    auto deadline = std::chrono::steady_clock::now() + *interval;
    while (!stop_requested()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      auto r = source->poll_events(std::min(left, std::chrono::milliseconds(250)),
                                   [&](const MmEvent& e) { events.push_back(e); });
      if (!r.ok()) return report_error(ctx, r.error().what());
    }
    if (stop_requested()) break;
    auto cur = source->sample();
    if (!cur.ok()) return report_error(ctx, cur.error().what());
    TelemetryInterval iv = interval_between(*prev, *cur);
    MonitorFrame frame;
    frame.interval = &iv;
    frame.probe_status = source->probe_status();
    frame.events = detector.feed(iv, events);
    for (const auto& e : frame.events) {
      recent.push_back(e);
      if (recent.size() > 5) recent.pop_front();
    }
    frame.recent.assign(recent.begin(), recent.end());
    if (deep && std::chrono::steady_clock::now() - deep_started >= *deep_for) {
      deep->stop();
      auto rep = deep->read(10);
      deep.reset();
      if (!rep.ok()) return report_error(ctx, rep.error().what());
      frame.deep = *rep;
    }
    for (const auto& e : frame.events) ++detected_totals[e.kind];
    if (o.prometheus) {
      MetricsExtras extras;
      std::tie(extras.probes_attached, extras.probes_total) = source->probe_counts();
      extras.detected_events_total = detected_totals;
      std::cout << render_metrics(*cur, extras) << std::flush;
    } else if (ctx.json) {
      print_json(monitor_json(frame));
    } else {
      if (tty) std::cout << "\x1b[H\x1b[2J";
      std::cout << monitor_text(frame, terminal_width()) << (tty ? "" : "\n") << std::flush;
    }
    prev = std::move(cur);
  }
  return k_exit_ok;
}

void setup(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<MonitorOptions>();
  auto* sub = app.add_subcommand("monitor", "live view of memory, fragmentation, stalls and PSI (NDJSON with --json)");
  sub->add_option("--interval", opts->interval, "time between samples (default 1s)");
  sub->add_option("--count", opts->count, "stop after N samples (default: until interrupted)");
  sub->add_option("--deep", opts->deep,
                  "attach the page-allocation probe (order histogram, top allocating tasks) for this long, then detach");
  sub->add_flag("--prometheus", opts->prometheus, "print the Prometheus text exposition (what the agent serves at /metrics)");
  add_telemetry_options(sub, opts->telemetry);
  sub->callback([&ctx, opts] { ctx.exit_code = run_monitor(ctx, *opts); });
}

const Verb verb{"monitor", 60, setup};

}  // namespace
}  // namespace spark::cli
