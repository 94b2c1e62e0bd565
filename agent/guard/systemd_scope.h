// Where systemd is PID 1 it owns the cgroup tree: a guard's box is then a transient scope asked of
// systemd over D-Bus (org.freedesktop.systemd1.Manager.StartTransientUnit, sd-bus), not a directory
// made by hand. The limits are still written through the Tuner into the scope's cgroup.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"

struct sd_bus;

namespace spark::guard {

// sd_booted()'s test through HostPaths: <run>/../systemd/system is a directory.
bool systemd_booted(const HostPaths& paths);

struct ScopeRequest {
  std::string name;  // "spark-guard-g1.scope"
  std::vector<pid_t> pids;
  std::string slice = "system.slice";
  std::string description;
  std::optional<uint64_t> memory_high, memory_max;
};

// "spark-guard-g1" -> "spark-guard-g1.scope"; refuses what systemd would.
Result<std::string> scope_unit_name(const std::string& base);
// Asks systemd for the scope on the given bus; returns the job's object path.
Result<std::string> start_transient_scope(sd_bus* bus, const ScopeRequest& r);
// The same on the system bus. ENOENT/ECONNREFUSED when no systemd answers.
Result<std::string> start_transient_scope(const ScopeRequest& r);

}  // namespace spark::guard
