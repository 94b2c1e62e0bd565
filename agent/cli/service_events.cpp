// Registers the event stream service with the agent (see daemon/service.h): first to start, last
// to stop, so every other service's events reach it.
#include "daemon/event_service.h"
#include "daemon/service.h"

static const spark::daemon::ServiceRegistration event_service_registration{
    "events", 1, [] { return std::make_unique<spark::daemon::EventService>(); }};
