// telemetry_footprint: memory and CPU of the telemetry an agent runs, with every probe attached:
// the `events` loop (ring-buffer poll, a procfs sample and the stall detector once a second) on an
// idle host for a period. Reports VmRSS / VmHWM and CPU time as a share of one core.
//
// Usage: telemetry_footprint [--seconds S]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "core/fs.h"
#include "telemetry/sample.h"
#include "telemetry/stall_detector.h"

using spark::telemetry::LocalTelemetrySource, spark::telemetry::MmEvent, spark::telemetry::StallDetector,
    spark::telemetry::interval_between;

using namespace spark;
using namespace std::chrono_literals;

namespace {
std::string status_field(const HostPaths& paths, const std::string& name) {
  auto text = read_file(paths.proc / "self/status");
  if (!text.ok()) return "?";
  for (const auto& l : split_lines(*text))
    if (l.rfind(name + ":", 0) == 0) return trim(l.substr(name.size() + 1));
  return "?";
}
double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
}  // namespace

int main(int argc, char** argv) {
  int seconds = 30;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc)
      seconds = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: telemetry_footprint [--seconds S]\n");
      return 2;
    }
  }
  HostPaths paths = HostPaths::system();
  auto source = LocalTelemetrySource::create(paths, {});
  std::printf("telemetry_footprint: %s\n", source->probe_status().c_str());
  StallDetector detector;
  auto prev = source->sample();
  if (!prev.ok()) return 1;
  double cpu0 = cpu_seconds();
  auto t0 = std::chrono::steady_clock::now();
  auto next = t0 + 1s;
  size_t events = 0;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(seconds)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - std::chrono::steady_clock::now());
    if (left.count() > 0) {
      (void)source->poll_events(left, [&](const MmEvent& e) {
        events += detector.on_event(e, std::chrono::system_clock::now()).has_value();
      });
      continue;
    }
    auto cur = source->sample();
    if (!cur.ok()) return 1;
    events += detector.feed(interval_between(*prev, *cur), {}).size();
    prev = std::move(cur);
    next += 1s;
  }
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double cpu = cpu_seconds() - cpu0;
  std::printf("  %d s idle loop: CPU %.3f s = %.3f%% of one core; VmRSS %s, VmHWM %s; %zu events\n", seconds, cpu,
              cpu / wall * 100, status_field(paths, "VmRSS").c_str(), status_field(paths, "VmHWM").c_str(), events);
  return 0;
}
