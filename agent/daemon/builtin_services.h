// The agent's services, listed (daemon/service.h says why a list and not self-registration).
#pragma once

#include <vector>

#include "daemon/service.h"

namespace spark::daemon {

// Every service the agent runs, with its order (the agent sorts by it). Nothing is constructed
// until the agent calls an entry's factory.
std::vector<ServiceEntry> builtin_services();

}  // namespace spark::daemon
