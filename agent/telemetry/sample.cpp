#include "telemetry/sample.h"

#include <thread>

namespace spark {

TelemetryInterval interval_between(const TelemetrySample& before, const TelemetrySample& after) {
  TelemetryInterval iv;
  iv.before = &before;
  iv.after = &after;
  iv.seconds = std::chrono::duration<double>(after.at - before.at).count();
  iv.vmstat = vmstat_delta(before.vmstat, after.vmstat, iv.seconds);
  if (before.probes && after.probes) iv.probes = after.probes->minus(*before.probes);
  return iv;
}

std::unique_ptr<LocalTelemetrySource> LocalTelemetrySource::create(const HostPaths& paths,
                                                                   const LocalSourceOptions& options) {
  std::unique_ptr<LocalTelemetrySource> s(new LocalTelemetrySource(paths, options));
  if (!options.use_bpf) {
    s->status_ = "procfs only: eBPF probes switched off";
    return s;
  }
  auto p = MmProbes::start(paths, options.probes);
  if (!p.ok()) {
    s->status_ = std::string("procfs only: ") + p.error().what();
    return s;
  }
  s->probes_.emplace(std::move(p).value());
  size_t total = s->probes_->choices().size();
  size_t on = s->probes_->attached_count();
  s->status_ = "eBPF: " + std::to_string(on) + "/" + std::to_string(total) + " probes attached";
  return s;
}

Result<TelemetrySample> LocalTelemetrySource::sample() {
  TelemetrySample s;
  s.at = std::chrono::steady_clock::now();
  s.wall = std::chrono::system_clock::now();
  SPARK_TRY(s.mem, read_meminfo(paths_));
  SPARK_TRY(s.buddy, read_buddyinfo(paths_));
  SPARK_TRY(s.vmstat, read_vmstat(paths_));
  auto psi = read_psi(memory_pressure_file(paths_));
  if (psi.ok()) s.psi = *psi;
  if (probes_) {
    SPARK_TRY(MmSnapshot snap, probes_->snapshot());
    s.probes = snap;
  }
  return s;
}

Result<int> LocalTelemetrySource::poll_events(std::chrono::milliseconds timeout,
                                              const std::function<void(const MmEvent&)>& on_event) {
  if (!probes_) {
    std::this_thread::sleep_for(timeout);
    return 0;
  }
  return probes_->poll_events(timeout, on_event);
}

std::vector<std::string> LocalTelemetrySource::probe_details() const {
  if (!probes_) return {status_};
  return probes_->describe();
}

std::pair<size_t, size_t> LocalTelemetrySource::probe_counts() const {
  if (!probes_) return {0, 0};
  return {probes_->attached_count(), probes_->choices().size()};
}

Result<DeepReport> LocalTelemetrySource::deep(std::chrono::milliseconds period, size_t top_n) {
  return run_deep(paths_, options_.probes.kinds, period, top_n);
}

}  // namespace spark
