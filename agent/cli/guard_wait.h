// Waiting for one event from the agent's event log: `events --wait TYPE` and `guard wait TYPE` (the
// latter with source guard). A long-poll on events.list with the filters, from the moment of the
// call: an event already in the log does not count.
#pragma once

#include <chrono>
#include <string>

#include "cli/registry.h"
#include "core/event_log.h"

namespace spark::cli {

// Exit 0 with the event (JSON) on stdout, 1 when the timeout passes first, 2 when no agent answers.
int wait_event(Context& ctx, const EventFilter& filter, std::chrono::milliseconds timeout);

// guard wait TYPE [--guard ID]: wait_event with source guard.
int wait_guard_event(Context& ctx, const std::string& type, const std::string& guard,
                     std::chrono::milliseconds timeout);

// events.list's filter parameters.
nlohmann::json filter_params(const EventFilter& f);

}  // namespace spark::cli
