// Options and plumbing shared by the `monitor` and `events` verbs.
#pragma once

#include <csignal>
#include <memory>
#include <string>

#include "cli/registry.h"
#include "core/units.h"
#include "telemetry/sample.h"

namespace spark::cli {

struct TelemetryCliOptions {
  bool no_bpf = false;
  std::string probe_kinds;  // hidden: "raw_tp,tp" forces tp_btf off (fallback testing)
  std::string stall = "50ms";
};

inline void add_telemetry_options(CLI::App* sub, TelemetryCliOptions& o) {
  sub->add_flag("--no-bpf", o.no_bpf, "procfs only: do not load eBPF probes");
  sub->add_option("--probe-kinds", o.probe_kinds, "program types allowed, e.g. raw_tp,tp (testing)")->group("");
  sub->add_option("--stall", o.stall, "a task stalled this long in direct reclaim/compaction is an event (default 50ms)");
}

// Builds the local source (the agent integration later swaps in a source that reads from the
// agent). Returns an error message for bad options.
inline Result<std::unique_ptr<LocalTelemetrySource>> make_source(const Context& ctx, const TelemetryCliOptions& o) {
  LocalSourceOptions lo;
  // A fixture tree (--root) is not the kernel the probes would watch: procfs only there.
  lo.use_bpf = !o.no_bpf && ctx.paths.proc == HostPaths::system().proc;
  if (!o.probe_kinds.empty()) {
    SPARK_TRY(lo.probes.kinds, ProbeKindPolicy::parse(o.probe_kinds));
  }
  SPARK_TRY(auto stall, parse_duration(o.stall));
  lo.probes.stall_threshold = stall;
  return LocalTelemetrySource::create(ctx.paths, lo);
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
