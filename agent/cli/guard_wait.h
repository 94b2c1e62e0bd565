// Waiting for one guard event from the agent (server_ready after a restart, oom_kill,
// memory_growth): shared by `guard wait TYPE` and `events --wait TYPE --guard ID`.
#pragma once

#include <chrono>
#include <string>

#include "cli/registry.h"

namespace spark::cli {

// Exit 0 with the event on stdout, 1 when the timeout passes first, 2 when no agent answers.
int wait_guard_event(Context& ctx, const std::string& type, const std::string& guard,
                     std::chrono::milliseconds timeout);

}  // namespace spark::cli
