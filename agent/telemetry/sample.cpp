#include "telemetry/sample.h"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <thread>
#include <vector>

namespace spark::telemetry {

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
  if (options.psi_stall.count() > 0) {
    auto t = PsiTrigger::create(memory_pressure_file(paths), PsiKind::some, options.psi_stall, options.psi_window);
    if (t.ok()) {
      s->trigger_.emplace(std::move(t).value());
      s->trigger_epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
      epoll_event ev{};
      ev.events = EPOLLPRI;
      ev.data.fd = s->trigger_->fd();
      if (s->trigger_epoll_.valid() &&
          ::epoll_ctl(s->trigger_epoll_.get(), EPOLL_CTL_ADD, s->trigger_->fd(), &ev) != 0) {
        s->trigger_epoll_.reset();
      }
    }
  }
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
  // One wait for both the probes' ring buffer and the PSI trigger.
  std::vector<pollfd> fds;
  if (probes_ && probes_->event_fd() >= 0) fds.push_back({probes_->event_fd(), POLLIN, 0});
  if (trigger_) fds.push_back({trigger_->fd(), POLLPRI, 0});
  if (fds.empty()) {
    std::this_thread::sleep_for(timeout);
    return 0;
  }
  int n = ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
  if (n < 0 && errno != EINTR) return errno_error("waiting for telemetry events");
  for (const auto& f : fds)
    if (trigger_ && f.fd == trigger_->fd() && (f.revents & POLLPRI)) trigger_fired_ = true;
  if (!probes_) return 0;
  // Drain the ring buffer without waiting (stall events are submitted without a wakeup).
  return probes_->poll_events(std::chrono::milliseconds(0), on_event);
}

std::vector<pollfd> LocalTelemetrySource::poll_fds() {
  std::vector<pollfd> fds;
  if (probes_ && probes_->event_fd() >= 0) fds.push_back({probes_->event_fd(), POLLIN, 0});
  if (trigger_epoll_.valid()) fds.push_back({trigger_epoll_.get(), POLLIN, 0});
  return fds;
}

void LocalTelemetrySource::on_ready(int fd, LoopClock::time_point) {
  if (!trigger_epoll_.valid() || fd != trigger_epoll_.get()) return;
  // The loop's poll of the epoll set already consumed the trigger's event (that is what made the
  // set readable); reap whatever is left without waiting.
  epoll_event ev[2];
  (void)::epoll_wait(trigger_epoll_.get(), ev, 2, 0);
  trigger_fired_ = true;
}

bool LocalTelemetrySource::take_pressure_trigger() {
  bool fired = trigger_fired_;
  trigger_fired_ = false;
  return fired;
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

Result<void> LocalTelemetrySource::deep_start() {
  if (deep_) return sys_error(EBUSY, "deep mode is already attached");
  if (!probes_) return sys_error(ENOTSUP, "deep mode needs eBPF (" + status_ + ")");
  SPARK_TRY(DeepProbe d, DeepProbe::start(paths_, options_.probes.kinds));
  deep_.emplace(std::move(d));
  return {};
}

Result<DeepReport> LocalTelemetrySource::deep_finish(size_t top_n) {
  if (!deep_) return sys_error(EINVAL, "deep mode is not running");
  deep_->stop();
  auto r = deep_->read(top_n);
  deep_.reset();  // programs unloaded, maps freed
  return r;
}

}  // namespace spark::telemetry
