// spark-tune doctor: independent checks that the host's protections are in place, each OK / WARN /
// FAIL with the exact fix. Effective state (procfs, sysfs, cgroup files, process environments), not
// file text, except where the question is what a file will do (boot, tuned).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "telemetry/bpf_features.h"

namespace spark::doctor {

enum class Status { ok, warn, fail };
const char* status_name(Status s);

struct Finding {
  std::string check;
  Status status = Status::ok;
  std::string message;
  std::string fix;  // what to run or write; empty when OK
};

// Hook for the active-profile comparison: the lead fills this from the journal/state (the profile last
// applied and its resolved values); when set, the sysctl check reports every key that drifted from it.
struct ActiveProfile {
  std::string name;
  std::vector<std::pair<std::string, std::string>> values;  // "vm.min_free_kbytes" -> "1048576"
};

struct Env {
  HostPaths paths = HostPaths::system();
  BpfFeatures* bpf = nullptr;  // null: the bpf check uses the real kernel
  std::string nvml_library;    // empty: libnvidia-ml.so.1 or SPARK_TUNE_NVML_LIB
  std::optional<ActiveProfile> active_profile;
  std::vector<std::string> protected_units;  // empty: the defaults (k_default_protected_units)
  std::chrono::milliseconds gpu_timeout{3000};
};

// Units that must stay usable under memory pressure: the agent, ssh, and interactive sessions (editor, shells).
inline const std::vector<std::string> k_default_protected_units = {"spark-tune.service", "ssh.service", "sshd.service",
                                                                   "user.slice"};

std::vector<Finding> check_sysctl(const Env& env);
std::vector<Finding> check_protection(const Env& env);
std::vector<Finding> check_bpf(const Env& env);
std::vector<Finding> check_cgroup(const Env& env);
std::vector<Finding> check_swap(const Env& env);
std::vector<Finding> check_thp(const Env& env);
std::vector<Finding> check_gpu(const Env& env);
std::vector<Finding> check_persist(const Env& env);

struct Check {
  const char* name;
  const char* about;
  std::vector<Finding> (*run)(const Env&);
};
const std::vector<Check>& checks();

// The named checks (all when empty), in the fixed order; EINVAL for an unknown name.
Result<std::vector<Finding>> run_checks(const Env& env, const std::vector<std::string>& names);
bool any_fail(const std::vector<Finding>& findings);

// The vm.min_free_kbytes reserve recommended for this much RAM: RAM/64 within [128 MiB, 1 GiB]
// (1 GiB on a 128 GiB GB10: the reserve that lets pinned allocations find free pages).
uint64_t recommended_min_free_kbytes(uint64_t mem_total_bytes);

// --- shared helpers (doctor/sysctl_sources.cpp) ---
// The filesystem root the paths live under ("/" on the host, the fixture root in tests).
// Equals HostPaths::host_root on main; derived here so this part builds on its own.
fs::path host_root(const HostPaths& paths);

struct SysctlAssignment {
  std::string key;
  std::string value;
  std::string source;     // "/etc/sysctl.d/99-foo.conf:3" or "tuned profile 'x' (...)"
  std::string file_name;  // basename for sysctl.d files, empty for tuned
};
// Every assignment of the keys in the order systemd-sysctl applies them at boot (last wins), then
// tuned's active profile (which re-applies when tuned starts). Minimal reader: switch to
// profile/overrides.h sysctl_sources() once merged.
std::vector<SysctlAssignment> sysctl_assignments(const HostPaths& paths, const std::vector<std::string>& keys);
// What --persist writes (profile/overrides.h k_persist_file_name on main).
inline constexpr const char* k_persist_file = "90-spark-tune.conf";
// Effective value of a sysctl key ("vm.min_free_kbytes"), whitespace-normalised.
Result<std::string> sysctl_value(const HostPaths& paths, const std::string& key);

}  // namespace spark::doctor
