// spark-tune monitor [--interval 1s] [--count N] [--json] [--deep S]: the live fragmentation view.
#include <sys/ioctl.h>
#include <unistd.h>

#include <deque>
#include <iostream>
#include <map>
#include <thread>
#include <tuple>

#include "cli/registry.h"
#include "cli/telemetry_common.h"
#include "core/log.h"
#include "core/units.h"
#include "telemetry/hub.h"
#include "telemetry/metrics.h"
#include "telemetry/monitor_view.h"

using spark::telemetry::DeepProbe, spark::telemetry::MonitorFrame, spark::telemetry::StallThresholds,
    spark::telemetry::TelemetryHub, spark::telemetry::monitor_json, spark::telemetry::monitor_text;

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

// Frames from a running agent: its hub samples once per its tick (1 s); a frame is printed when a
// new one is there and --interval has passed since the last one printed.
int monitor_from_agent(Context& ctx, const MonitorOptions& o, std::chrono::milliseconds interval, long pid,
                       std::optional<std::chrono::milliseconds> deep_for) {
  log_info("monitor from the agent (pid " + std::to_string(pid) + "); --local loads probes here instead");
  // --deep through the agent: it attaches deep mode for the period (or joins the one running) and
  // detaches it, as the detector's periods. The request stays open on a connection of its own
  // until the period reports: this process leaving (Ctrl-C) closes it, and the agent ends a
  // period nobody waits for any more. The report comes in the first frame after the answer.
  std::optional<daemon::PendingCall> deep_call;
  std::optional<uint64_t> deep_after;
  if (deep_for) {
    nlohmann::json p{{"seconds", static_cast<double>(deep_for->count()) / 1000.0},
                     {"who", "monitor --deep (pid " + std::to_string(::getpid()) + ")"},
                     {"hold", true}};
    auto d = daemon::PendingCall::send(ctx.paths, "telemetry.deep", p);
    if (!d) return report_error(ctx, std::string("--deep through the agent: ") + d.error().what());
    deep_call.emplace(std::move(d).value());
    // A refusal (a bad period, no eBPF) comes at once.
    if (auto early = deep_call->poll(std::chrono::milliseconds(200))) {
      if (!*early) return report_error(ctx, std::string("--deep through the agent: ") + early->error().what());
      deep_after = early->value().value("reports", uint64_t{1}) - 1;
      deep_call.reset();
    }
  }
  auto first = daemon::call(ctx.paths, "telemetry.sample", nlohmann::json::object());
  if (!first) return report_error(ctx, std::string("the agent's telemetry: ") + first.error().what());
  uint64_t seq = first->value("seq", uint64_t{0});
  install_stop_handlers();
  bool tty = ::isatty(STDOUT_FILENO) && !ctx.json;
  std::optional<std::chrono::steady_clock::time_point> last_printed;
  for (int n = 0; (o.count == 0 || n < o.count) && !stop_requested();) {
    if (deep_call) {
      // Waits here instead of sleeping: the answer comes when the period reports.
      if (auto done = deep_call->poll(std::chrono::milliseconds(100))) {
        if (!*done) return report_error(ctx, std::string("--deep through the agent: ") + done->error().what());
        deep_after = done->value().value("reports", uint64_t{1}) - 1;
        deep_call.reset();
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    nlohmann::json params = nlohmann::json::object();
    if (!ctx.json && !o.prometheus) params["width"] = terminal_width();
    if (deep_after) params["deep_after"] = *deep_after;
    auto r = daemon::call(ctx.paths, "telemetry.sample", params);
    if (!r) return report_error(ctx, std::string("the agent stopped answering: ") + r.error().what());
    uint64_t now_seq = r->value("seq", uint64_t{0});
    if (now_seq == seq || (*r)["frame"].is_null()) continue;
    seq = now_seq;
    auto now = std::chrono::steady_clock::now();
    // Frames come at the agent's tick; a longer --interval skips some (10% slack for jitter).
    if (last_printed && now - *last_printed < interval * 9 / 10) continue;
    last_printed = now;
    ++n;
    if (deep_after && r->contains("deep_reports")) deep_after.reset();  // this frame carries it
    if (o.prometheus) {
      auto m = daemon::call(ctx.paths, "telemetry.metrics", nlohmann::json::object());
      if (!m) return report_error(ctx, std::string("the agent's metrics: ") + m.error().what());
      std::cout << m->value("text", "") << std::flush;
    } else if (ctx.json) {
      print_json((*r)["frame"]);
    } else {
      if (tty) std::cout << "\x1b[H\x1b[2J";
      std::cout << r->value("text", "") << (tty ? "" : "\n") << std::flush;
    }
  }
  return k_exit_ok;
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
  // A running agent serves the frames, and --deep too (it attaches and detaches deep mode).
  if (auto pid = agent_for_telemetry(ctx, o.telemetry)) return monitor_from_agent(ctx, o, *interval, *pid, deep_for);
  auto source_r = make_source(ctx, o.telemetry);
  if (!source_r.ok()) return report_error(ctx, source_r.error().what());
  auto source = std::move(source_r).value();
  if (!source->has_probes()) log_warning(source->probe_status());
  std::optional<DeepProbe> deep;
  if (deep_for) {
    if (!source->has_probes()) return report_error(ctx, "--deep needs eBPF: " + source->probe_status());
    auto d = DeepProbe::start(ctx.paths, source->options().probes.kinds);
    if (!d.ok()) return report_error(ctx, std::string("--deep: ") + d.error().what());
    deep.emplace(std::move(d).value());
  }
  auto deep_started = std::chrono::steady_clock::now();

  install_stop_handlers();
  StallThresholds thresholds = thresholds_for(source->options());
  TelemetryHub hub(std::move(source), thresholds, *interval, 5);
  bool tty = ::isatty(STDOUT_FILENO) && !ctx.json;
  for (int n = 0; (o.count == 0 || n < o.count) && !stop_requested();) {
    auto step = hub.step(std::chrono::milliseconds(250));
    if (!step.ok()) return report_error(ctx, step.error().what());
    if (!step->interval) continue;
    ++n;
    MonitorFrame frame;
    frame.interval = step->interval;
    frame.probe_status = hub.source().probe_status();
    frame.events = hub.last_interval_events();
    frame.recent.assign(hub.recent().begin(), hub.recent().end());
    if (deep && std::chrono::steady_clock::now() - deep_started >= *deep_for) {
      deep->stop();
      auto rep = deep->read(10);
      deep.reset();
      if (!rep.ok()) return report_error(ctx, rep.error().what());
      frame.deep = *rep;
    }
    if (o.prometheus) {
      std::cout << hub.metrics() << std::flush;
    } else if (ctx.json) {
      print_json(monitor_json(frame));
    } else {
      if (tty) std::cout << "\x1b[H\x1b[2J";
      std::cout << monitor_text(frame, terminal_width()) << (tty ? "" : "\n") << std::flush;
    }
  }
  return k_exit_ok;
}

void setup(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<MonitorOptions>();
  auto* sub = app.add_subcommand("monitor", "live view of memory, fragmentation, stalls and PSI (NDJSON with --json)");
  sub->add_option("--interval", opts->interval, "time between samples (default 1s)");
  sub->add_option("--count", opts->count, "stop after N samples (default: until interrupted)");
  sub->add_option(
      "--deep", opts->deep,
      "attach the page-allocation probe (order histogram, top allocating tasks) for this long, then detach");
  sub->add_flag("--prometheus", opts->prometheus,
                "print the Prometheus text exposition (what the agent serves at /metrics)");
  add_telemetry_options(sub, opts->telemetry);
  sub->callback([&ctx, opts] { ctx.exit_code = run_monitor(ctx, *opts); });
}

const Verb k_verb{"monitor", 60, setup};

}  // namespace
}  // namespace spark::cli
