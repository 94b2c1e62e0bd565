#include "daemon/builtin_services.h"

#include "daemon/event_service.h"
#include "daemon/guard_service.h"
#include "daemon/telemetry_service.h"
#include "daemon/window_service.h"

namespace spark::daemon {

std::vector<ServiceEntry> builtin_services() {
  return {
      // The event stream: first to start, last to stop, so every other service's events reach it.
      {"events", 1, [] { return std::make_unique<EventService>(); }},
      // Load windows.
      {"window", 10, [] { return std::make_unique<WindowService>(); }},
      // Server memory guards.
      {"guard", 20, [] { return std::make_unique<GuardService>(); }},
      // Telemetry (probes, detector, /metrics).
      {"telemetry", 30, [] { return std::make_unique<TelemetryService>(); }},
  };
}

}  // namespace spark::daemon
