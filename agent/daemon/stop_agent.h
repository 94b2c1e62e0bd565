// Stopping a running agent from outside (spark-tune revert --stop-agent, the package's prerm): the
// agent holds an flock on its pid file (<run>/agent.pid) for as long as it runs, so a pid file
// nobody locks is a dead agent's and nothing is signalled. SIGTERM makes the agent end every
// window (their values restored) before it exits; guards stay journaled for `revert` to end.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark::daemon {

// The pid of the agent that runs with these paths, or nullopt when none does.
Result<std::optional<pid_t>> running_agent(const HostPaths& paths);

// Stops it: SIGTERM, then waits up to `wait` for it to exit (ETIMEDOUT if it does not). Returns
// the pid it stopped, or nullopt when no agent ran.
Result<std::optional<pid_t>> stop_agent(const HostPaths& paths,
                                        std::chrono::milliseconds wait = std::chrono::milliseconds(30'000));

}  // namespace spark::daemon
