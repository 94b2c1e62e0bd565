// Registers the load-window service with the agent (the model for other services: see daemon/service.h).
#include "daemon/service.h"
#include "daemon/window_service.h"

static const spark::daemon::ServiceRegistration window_service_registration{
    "window", 10, [] { return std::make_unique<spark::daemon::WindowService>(); }};
