// The control socket's protocol: one JSON object per line each way.
//   request:  {"id": 1, "method": "window.begin", "params": {...}}
//   response: {"id": 1, "result": ...}  or  {"id": 1, "error": {"message": "...", "code": <errno>}}
// The socket is <run>/agent.sock (HostPaths::run), mode 0660, group spark-tune when that group exists.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "core/fd.h"
#include "core/host_paths.h"
#include "core/result.h"

namespace spark::daemon {

inline constexpr const char* k_group_name = "spark-tune";

inline fs::path socket_path(const HostPaths& paths) { return paths.run / "agent.sock"; }
inline fs::path pid_file(const HostPaths& paths) { return paths.run / "agent.pid"; }

// An error as it travels in a response, and back.
nlohmann::json error_to_json(const Error& e);
Error error_from_json(const nlohmann::json& j);

// One request/response over a fresh connection. ECONNREFUSED/ENOENT when no agent listens;
// ETIMEDOUT when nothing answers within `timeout` (connecting included: a full queue).
Result<nlohmann::json> call(const HostPaths& paths, const std::string& method, const nlohmann::json& params,
                            std::chrono::milliseconds timeout = std::chrono::milliseconds(30'000));

// A request whose answer comes later, on a connection kept open meanwhile: the open connection
// tells the agent the caller is still there (telemetry.deep {"hold": true}); closing it (or the
// process ending, Ctrl-C included) tells it the caller has gone.
class PendingCall {
 public:
  static Result<PendingCall> send(const HostPaths& paths, const std::string& method, const nlohmann::json& params,
                                  std::chrono::milliseconds connect_timeout = std::chrono::milliseconds(5000));
  PendingCall(PendingCall&&) noexcept = default;
  PendingCall& operator=(PendingCall&&) = delete;
  PendingCall(const PendingCall&) = delete;
  // The answer once it is there (waits at most `wait`); nullopt while it is not. After an answer
  // (or an error) the connection is closed.
  std::optional<Result<nlohmann::json>> poll(std::chrono::milliseconds wait = std::chrono::milliseconds(0));

 private:
  PendingCall(int fd, std::string method) : fd_(fd), method_(std::move(method)) {}
  Fd fd_;
  std::string method_;
  std::string in_;
};

// How long the CLI waits for an agent that a listening socket promises: systemd queues the
// connection and starts spark-tune.service, which answers once its journal is recovered. The same
// as the unit's TimeoutStartSec (install/spark-tune.service).
inline constexpr std::chrono::seconds k_activation_wait{60};

// How the CLI reaches an agent, starting one when none runs. It connects and asks agent.ping:
// - the socket accepts the connection: something listens there -- a running agent, or systemd (or
//   another socket activator) holding the socket for an agent it is starting. The CLI waits up to
//   `activation_wait` for the answer and never starts a second agent beside it;
// - ENOENT (no socket file) or ECONNREFUSED (a file nobody listens on: a dead agent's): no agent,
//   so it starts `<exe> agent` detached (setsid, double fork, stdio on /dev/null) and waits up to
//   `wait` for it to answer. `extra_args` go before the verb (--state-dir ...).
// - where systemd runs and spark-tune.socket is installed for this socket path
//   (socket_unit_manages()), no agent is ever started here: a socket nobody listens on means the
//   unit is stopped, so the CLI asks systemd to start it (`start_unit`, D-Bus by default) and then
//   waits for the activated agent; when that fails it says the exact systemctl command.
Result<void> ensure_agent(const HostPaths& paths, const std::vector<std::string>& extra_args,
                          std::chrono::milliseconds wait = std::chrono::milliseconds(10'000),
                          std::chrono::milliseconds activation_wait = k_activation_wait,
                          const std::function<Result<void>(const std::string& unit)>& start_unit = nullptr);

}  // namespace spark::daemon
