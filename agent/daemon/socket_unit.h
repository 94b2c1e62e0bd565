// Where systemd runs and spark-tune.socket is installed, the socket unit owns the agent's control
// socket: the CLI connects there (systemd starts spark-tune.service on the first connection) and
// never starts an agent beside it. When the unit is installed but not listening, the CLI asks
// systemd to start it over D-Bus (org.freedesktop.systemd1.Manager.StartUnit, sd-bus), or says
// the exact command to run. See docs/telemetry-agent.md "Socket activation and detached agents".
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"

struct sd_bus;

namespace spark::daemon {

inline constexpr const char* k_socket_unit = "spark-tune.socket";

// The unit directories systemd reads, under HostPaths::host_root, highest precedence first.
std::vector<fs::path> unit_dirs(const HostPaths& paths);

// The installed spark-tune.socket whose ListenStream= is where this CLI connects
// (socket_path(paths)), or nullopt: not installed, or it listens elsewhere (an agent of a test or
// of another run directory is not the unit's business).
std::optional<fs::path> installed_socket_unit(const HostPaths& paths);

// True where systemd is PID 1 (<host_root>/run/systemd/system, as sd_booted()) and the socket unit
// above is installed: the CLI then goes through the unit only.
bool socket_unit_manages(const HostPaths& paths);

// Asks systemd to start a unit ("replace"); returns the job's object path.
Result<std::string> start_unit(sd_bus* bus, const std::string& unit);
// The same on the system bus (ENOENT/ECONNREFUSED/EACCES when that fails: say what to run instead).
Result<std::string> start_unit_on_system_bus(const std::string& unit);

// How ensure_agent starts the socket unit: the system bus, or a test's fake.
using UnitStarter = std::function<Result<void>(const std::string& unit)>;
UnitStarter system_bus_starter();

}  // namespace spark::daemon
