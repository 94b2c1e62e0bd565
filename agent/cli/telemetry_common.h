// Options and plumbing shared by the `monitor` and `events` verbs.
#pragma once

#include <algorithm>
#include <chrono>
#include <csignal>
#include <memory>
#include <optional>
#include <string>

#include "cli/registry.h"
#include "core/units.h"
#include "daemon/protocol.h"
#include "telemetry/sample.h"
#include "telemetry/stall_detector.h"

namespace spark::cli {

struct TelemetryCliOptions {
  bool no_bpf = false;
  std::string probe_kinds;  // hidden: "raw_tp,tp" forces tp_btf off (fallback testing)
  std::string stall;        // empty: 50ms
  bool local = false;
};

inline constexpr const char* k_default_stall = "50ms";

inline void add_telemetry_options(CLI::App* sub, TelemetryCliOptions& o) {
  sub->add_flag("--no-bpf", o.no_bpf, "procfs only: do not load eBPF probes");
  sub->add_option("--probe-kinds", o.probe_kinds, "program types allowed, e.g. raw_tp,tp (testing)")->group("");
  sub->add_option("--stall", o.stall,
                  "a task stalled this long in direct reclaim/compaction is an event (default 50ms; "
                  "loads probes in this process)");
  sub->add_flag("--local", o.local,
                "load probes in this process even when an agent runs (default: read from a running agent)");
}

// A running agent's telemetry, when the options allow it: never starts an agent. Options that
// configure probes (--no-bpf, --probe-kinds, --stall) and fixture trees (--root) read locally.
// Returns the agent's pid, or nullopt to read locally.
inline std::optional<long> agent_for_telemetry(const Context& ctx, const TelemetryCliOptions& o) {
  if (o.local || o.no_bpf || !o.probe_kinds.empty() || !o.stall.empty()) return std::nullopt;
  if (ctx.paths.proc != HostPaths::system().proc) return std::nullopt;
  auto ping = daemon::call(ctx.paths, "agent.ping", nlohmann::json::object(), std::chrono::milliseconds(2000));
  if (!ping) return std::nullopt;  // no agent (or not ours to talk to): local
  auto services = ping->value("services", nlohmann::json::array());
  if (std::find(services.begin(), services.end(), "telemetry") == services.end()) return std::nullopt;
  return ping->value("pid", 0L);
}

// Builds the local source (the agent integration later swaps in a source that reads from the
// agent). Returns an error message for bad options. Without --stall the probes' stall threshold is
// `stall` (the profile's detector.stall_ms for events, as in the agent).
inline Result<std::unique_ptr<telemetry::LocalTelemetrySource>> make_source(
    const Context& ctx, const TelemetryCliOptions& o,
    std::optional<std::chrono::nanoseconds> stall_default = std::nullopt) {
  telemetry::LocalSourceOptions lo;
  // A fixture tree (--root) is not the kernel the probes would watch: procfs only there.
  lo.use_bpf = !o.no_bpf && ctx.paths.proc == HostPaths::system().proc;
  if (!o.probe_kinds.empty()) {
    SPARK_TRY(lo.probes.kinds, telemetry::ProbeKindPolicy::parse(o.probe_kinds));
  }
  if (o.stall.empty() && stall_default) {
    lo.probes.stall_threshold = *stall_default;
  } else {
    SPARK_TRY(auto stall, parse_duration(o.stall.empty() ? k_default_stall : o.stall));
    lo.probes.stall_threshold = stall;
  }
  return telemetry::LocalTelemetrySource::create(ctx.paths, lo);
}

// The detector's thresholds for the options given (--stall is both the probes' event threshold
// and the detector's fragmentation_stall threshold).
inline telemetry::StallThresholds thresholds_for(const telemetry::LocalSourceOptions& o) {
  telemetry::StallThresholds t;
  t.task_stall = std::chrono::duration_cast<std::chrono::milliseconds>(o.probes.stall_threshold);
  return t;
}

// SIGINT/SIGTERM end the loop cleanly (probes detach in destructors).
inline volatile std::sig_atomic_t& stop_requested() {
  static volatile std::sig_atomic_t flag = 0;
  return flag;
}
inline void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = [](int) { stop_requested() = 1; };
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace spark::cli
