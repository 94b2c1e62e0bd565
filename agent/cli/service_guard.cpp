// Registers the server memory guard service with the agent (see daemon/service.h).
#include "daemon/guard_service.h"
#include "daemon/service.h"

static const spark::daemon::ServiceRegistration guard_service_registration{
    "guard", 20, [] { return std::make_unique<spark::daemon::GuardService>(); }};
