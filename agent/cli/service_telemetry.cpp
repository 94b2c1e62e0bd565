// Registers the telemetry service with the agent (daemon/telemetry_service.h).
#include "daemon/service.h"
#include "daemon/telemetry_service.h"

static const spark::daemon::ServiceRegistration telemetry_service_registration{
    "telemetry", 30, [] { return std::make_unique<spark::daemon::TelemetryService>(); }};
