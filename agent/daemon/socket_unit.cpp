#include "daemon/socket_unit.h"

#include <systemd/sd-bus.h>

#include <memory>

#include "core/fs.h"
#include "core/sd_bus_call.h"
#include "daemon/protocol.h"

namespace spark::daemon {

namespace {

// The last ListenStream= of the [Socket] section (later assignments win; an empty one resets).
std::optional<std::string> listen_stream(const std::string& unit) {
  std::optional<std::string> found;
  bool in_socket = false;
  for (const auto& raw : split_lines(unit)) {
    std::string line = trim(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      in_socket = line == "[Socket]";
      continue;
    }
    if (!in_socket || line.rfind("ListenStream=", 0) != 0) continue;
    std::string v = trim(line.substr(13));
    if (v.empty())
      found.reset();
    else
      found = v;
  }
  return found;
}

}  // namespace

std::vector<fs::path> unit_dirs(const HostPaths& paths) {
  const fs::path& r = paths.host_root;
  return {r / "etc/systemd/system", r / "run/systemd/system", r / "usr/local/lib/systemd/system",
          r / "usr/lib/systemd/system", r / "lib/systemd/system"};
}

std::optional<fs::path> installed_socket_unit(const HostPaths& paths) {
  for (const auto& dir : unit_dirs(paths)) {
    fs::path p = dir / k_socket_unit;
    std::error_code ec;
    if (!fs::exists(p, ec)) continue;
    // The first one found is the one systemd loads; /dev/null (masked) is not installed.
    if (fs::is_symlink(p, ec) && fs::read_symlink(p, ec) == "/dev/null") return std::nullopt;
    auto text = read_file(p);
    if (!text) return std::nullopt;
    auto where = listen_stream(*text);
    // The unit's path is the host's: under a fixture root it names host_root/<path>.
    if (!where || where->empty() || (*where)[0] != '/') return std::nullopt;
    fs::path listen = paths.host_root / fs::path(*where).relative_path();
    if (listen.lexically_normal() != socket_path(paths).lexically_normal()) return std::nullopt;
    return p;
  }
  return std::nullopt;
}

bool socket_unit_manages(const HostPaths& paths) {
  std::error_code ec;
  return fs::is_directory(paths.host_root / "run/systemd/system", ec) && installed_socket_unit(paths).has_value();
}

Result<std::string> start_unit(sd_bus* bus, const std::string& unit) {
  // Built from the calls core/systemd_lazy.cpp forwards (sd_bus_call_method is variadic).
  sd_bus_message* call_raw = nullptr;
  int rc = sd_bus_message_new_method_call(bus, &call_raw, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                          "org.freedesktop.systemd1.Manager", "StartUnit");
  if (rc < 0) return sys_error(-rc, "building systemd's StartUnit call for " + unit);
  SdBusMessage call(call_raw);
  rc = sd_bus_message_append(call.get(), "ss", unit.c_str(), "replace");
  if (rc < 0) return sys_error(-rc, "building systemd's StartUnit call for " + unit);
  return call_returning_object_path(bus, call.get(), 0, "systemd did not start " + unit);
}

Result<std::string> start_unit_on_system_bus(const std::string& unit) {
  SPARK_TRY(SdBus bus, open_system_bus("to start " + unit));
  return start_unit(bus.get(), unit);
}

UnitStarter system_bus_starter() {
  return [](const std::string& unit) -> Result<void> {
    SPARK_TRY(std::string job, start_unit_on_system_bus(unit));
    (void)job;
    return {};
  };
}

}  // namespace spark::daemon
