// Guard events are the house's one Event (core/event.h) with source guard and the guard id as
// subject; the supervisor's sink feeds the agent's event log (or a foreground guard's own).
#pragma once

#include "core/event.h"

namespace spark::guard {

// A guard event with its one-line summary and hint made from its type and data.
Event make_event(const std::string& guard_id, const std::string& type, nlohmann::json data);

}  // namespace spark::guard
