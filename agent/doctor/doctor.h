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
#include "profile/profile_ops.h"
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

// The applied profile (owner "profile" in the journal) and the state of each key it set, as
// `spark-tune verify` sees it (profile/profile_ops.h): "ok", "drift" (with who else sets the key),
// or "held by window:w1".
struct ActiveProfile {
  std::string name;
  std::vector<profile::VerifyRow> rows;
};
// From the journal: nullopt when no profile is applied; an error when the journal cannot be read.
Result<std::optional<ActiveProfile>> read_active_profile(const HostPaths& paths);

// What would wake a window's floor besides its 10 ms check (check_floor): a description of each
// source, or why it is not there. Tests give a fake; null in Env: the real kernel.
class FloorWakeProbe {
 public:
  virtual ~FloorWakeProbe() = default;
  virtual Result<std::string> psi() = 0;      // a memory PSI trigger can be created
  virtual Result<std::string> reclaim() = 0;  // the reclaim tracepoints load and attach (which kind)
};

struct Env {
  HostPaths paths = HostPaths::system();
  telemetry::BpfFeatures* bpf = nullptr;        // null: the bpf check uses the real kernel
  std::string nvml_library;                     // empty: libnvidia-ml.so.1 or SPARK_TUNE_NVML_LIB
  std::optional<ActiveProfile> active_profile;  // the CLI fills it with read_active_profile
  std::string journal_error;                    // why it could not (a WARN of the sysctl check)
  std::vector<std::string> protected_units;     // empty: the defaults (k_default_protected_units)
  std::chrono::milliseconds gpu_timeout{3000};
  FloorWakeProbe* floor_wake = nullptr;  // null: the floor check tries the real kernel
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
std::vector<Finding> check_systemd(const Env& env);
std::vector<Finding> check_floor(const Env& env);
// check_floor's report from what each wake source gave.
std::vector<Finding> floor_wake_findings(const Result<std::string>& psi, const Result<std::string>& reclaim);

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

}  // namespace spark::doctor
