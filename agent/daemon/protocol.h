// The control socket's protocol: one JSON object per line each way.
//   request:  {"id": 1, "method": "window.begin", "params": {...}}
//   response: {"id": 1, "result": ...}  or  {"id": 1, "error": {"message": "...", "code": <errno>}}
// The socket is <run>/agent.sock (HostPaths::run), mode 0660, group spark-tune when that group exists.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark::daemon {

inline constexpr const char* k_group_name = "spark-tune";

inline fs::path socket_path(const HostPaths& paths) { return paths.run / "agent.sock"; }
inline fs::path pid_file(const HostPaths& paths) { return paths.run / "agent.pid"; }

// An error as it travels in a response, and back.
nlohmann::json error_to_json(const Error& e);
Error error_from_json(const nlohmann::json& j);

// One request/response over a fresh connection. ECONNREFUSED/ENOENT when no agent listens.
Result<nlohmann::json> call(const HostPaths& paths, const std::string& method, const nlohmann::json& params,
                            std::chrono::milliseconds timeout = std::chrono::milliseconds(30'000));

// How the CLI starts an agent that is not running: connect; if nothing answers and systemd did not
// socket-activate one, start `<exe> agent` detached (setsid, double fork, stdio on /dev/null) and
// wait for the socket to answer agent.ping. `extra_args` go before the verb (--state-dir ...).
Result<void> ensure_agent(const HostPaths& paths, const std::vector<std::string>& extra_args,
                          std::chrono::milliseconds wait = std::chrono::milliseconds(10'000));

}  // namespace spark::daemon
