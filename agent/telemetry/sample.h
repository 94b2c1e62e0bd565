// One telemetry sample (cumulative state at an instant) and the source that produces samples and
// events. The CLI verbs own a LocalTelemetrySource; the agent owns one too and serves the same
// data, so `monitor`/`events` can read from it instead of loading probes themselves.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/fd.h"
#include "core/host_paths.h"
#include "core/loop.h"
#include "core/meminfo.h"
#include "core/result.h"
#include "telemetry/buddyinfo.h"
#include "telemetry/deep_probe.h"
#include "telemetry/mm_probes.h"
#include "telemetry/psi.h"
#include "telemetry/vmstat.h"

namespace spark::telemetry {

struct TelemetrySample {
  std::chrono::steady_clock::time_point at;
  std::chrono::system_clock::time_point wall;
  MemInfo mem;
  BuddyInfo buddy;
  VmStat vmstat;
  std::optional<Psi> psi;            // absent: kernel without PSI
  std::optional<MmSnapshot> probes;  // absent: procfs only
};

// What changed between two samples.
struct TelemetryInterval {
  const TelemetrySample* before = nullptr;
  const TelemetrySample* after = nullptr;
  double seconds = 0;
  VmStatDelta vmstat;
  std::optional<MmSnapshot> probes;  // delta, when both samples have probes
  bool psi_triggered = false;        // the PSI trigger fired in this interval
};
TelemetryInterval interval_between(const TelemetrySample& before, const TelemetrySample& after);

// A LoopPart (core/loop.h) for a daemon's own poll loop: its fds become readable (POLLIN) when
// poll_events has work, and on_ready notes that one of them was reported ready there (a PSI
// trigger's event is consumed by the poll that reports it, so the loop must pass it on). Its
// timer is the hub's (telemetry/hub.h), not the source's.
class TelemetrySource : public LoopPart {
 public:
  virtual Result<TelemetrySample> sample() = 0;
  // Pending discrete events (OOM victims, stalls over threshold), waiting up to timeout.
  virtual Result<int> poll_events(std::chrono::milliseconds timeout,
                                  const std::function<void(const MmEvent&)>& on_event) = 0;
  // Whether the memory PSI trigger fired since the last call (then resets).
  virtual bool take_pressure_trigger() = 0;
  // Whether eBPF probes run, and if not why ("procfs only: ...").
  virtual bool has_probes() const = 0;
  virtual std::string probe_status() const = 0;
  virtual std::vector<std::string> probe_details() const = 0;
  // Probes attached, probes known (0, 0 without BPF).
  virtual std::pair<size_t, size_t> probe_counts() const = 0;
  // Deep mode for a period (attach, wait, detach).
  virtual Result<DeepReport> deep(std::chrono::milliseconds period, size_t top_n) = 0;
  // Deep mode without blocking (the agent's detector): attach now, detach and report later.
  virtual Result<void> deep_start() { return sys_error(ENOTSUP, "deep mode is not available here"); }
  virtual Result<DeepReport> deep_finish(size_t /*top_n*/) { return sys_error(ENOTSUP, "deep mode is not running"); }
  virtual bool deep_attached() const { return false; }
};

struct LocalSourceOptions {
  bool use_bpf = true;
  MmProbeOptions probes;
  // A PSI trigger on the host's memory pressure: "some" stall of this much in the window wakes the
  // loop at once (the window must be a multiple of 2 s without CAP_SYS_RESOURCE). 0: none.
  std::chrono::microseconds psi_stall{std::chrono::milliseconds(150)};
  std::chrono::microseconds psi_window{std::chrono::seconds(2)};
};

// procfs readers plus, when possible, the eBPF probes loaded in this process.
class LocalTelemetrySource : public TelemetrySource {
 public:
  // Never fails for lack of BPF: it falls back to procfs and says why in probe_status().
  static std::unique_ptr<LocalTelemetrySource> create(const HostPaths& paths, const LocalSourceOptions& options);
  Result<TelemetrySample> sample() override;
  Result<int> poll_events(std::chrono::milliseconds timeout,
                          const std::function<void(const MmEvent&)>& on_event) override;
  bool take_pressure_trigger() override;
  bool has_probes() const override { return probes_.has_value(); }
  std::string probe_status() const override { return status_; }
  bool has_pressure_trigger() const { return trigger_.has_value(); }
  std::vector<std::string> probe_details() const override;
  std::pair<size_t, size_t> probe_counts() const override;
  Result<DeepReport> deep(std::chrono::milliseconds period, size_t top_n) override;
  Result<void> deep_start() override;
  Result<DeepReport> deep_finish(size_t top_n) override;
  bool deep_attached() const override { return deep_ && deep_->attached(); }
  // The running deep probe (tests: its program ids), null when none.
  const DeepProbe* deep_probe() const { return deep_ ? &*deep_ : nullptr; }
  std::vector<pollfd> poll_fds() override;
  void on_ready(int fd, LoopClock::time_point now) override;
  MmProbes* probes() { return probes_ ? &*probes_ : nullptr; }
  const LocalSourceOptions& options() const { return options_; }

 private:
  LocalTelemetrySource(const HostPaths& paths, const LocalSourceOptions& options) : paths_(paths), options_(options) {}
  HostPaths paths_;
  LocalSourceOptions options_;
  std::optional<MmProbes> probes_;
  std::optional<PsiTrigger> trigger_;
  std::optional<DeepProbe> deep_;
  // The trigger inside an epoll set of its own: a PSI file is always POLLIN-ready (only POLLPRI
  // means an event), so a loop that polls for POLLIN gets this fd instead.
  Fd trigger_epoll_;
  bool trigger_fired_ = false;
  std::string status_;
};

}  // namespace spark::telemetry
