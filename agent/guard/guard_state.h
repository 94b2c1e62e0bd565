// The journaled form of a guard (owner "guard:<id>" in the change journal, its config in the
// owner state): the options a guard was asked with, what set-up found and restarts changed, their
// JSON codecs, and what any spark-tune process can do with journaled guards (list them, end one).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "guard/process.h"
#include "tune/tuner.h"

namespace spark::guard {

using Ms = std::chrono::milliseconds;

struct GuardOptions {
  pid_t pid = 0;                     // guard a running process (moved into a box of its own)
  std::string cgroup;                // or guard an existing memory cgroup in place ("/path" in the hierarchy)
  std::vector<std::string> command;  // what --restart runs; default: the process's own command line
  std::string budget;                // "" = min(8 GiB, 30% of available); "2G"; "30% of available"
  std::optional<uint64_t> memory_high, memory_max;  // absolute values
  Ms settle_after{0};                               // footprint measured this long after the start (the load is done)
  bool force = false;                               // allow a limit below current usage
  std::vector<std::string> on_oom;
  Ms hook_timeout{10000};
  bool restart = false;
  int restart_max = 5;
  Ms restart_window{300000};
  Ms restart_backoff{250};       // first restart immediate, then backoff * 2^(n-1), at most 30 s
  std::string until_port;        // HOST:PORT readiness after a restart
  Ms warn_eta{30000};            // memory_growth when the limit is nearer than this
  std::string parent;            // cgroup the box is made under; default this process's own memory cgroup
  bool settle_on_ready = false;  // footprint measured when --until-port first accepts (the load is done)
  std::string host_floor;        // --host-floor as given (guard/host_floor.h): "" default, "off", SIZE|N%
};

nlohmann::json options_to_json(const GuardOptions& o);
Result<GuardOptions> options_from_json(const nlohmann::json& j);

// The journaled form of a guard: options plus what set-up found and restarts changed.
struct GuardState {
  std::string id;
  GuardOptions opt;
  pid_t pid = 0;
  std::string box;        // the cgroup path guarded
  bool owns_box = false;  // created by the guard (removed at the end)
  std::string origin;     // where the process was before (restored at the end)
  std::string scope;      // the systemd transient scope holding the box, where systemd runs
  ServerLaunch launch;    // for restarts
  bool settled = false;
  uint64_t footprint = 0;
  uint64_t budget = 0;
  uint64_t limit = 0;
  std::vector<int64_t> restarts_ms;  // unix ms of each restart
  int64_t started_ms = 0;
  uint64_t host_floor = 0;  // MemAvailable floor in bytes (guard/host_floor.h); 0: none

  nlohmann::json to_json() const;
  static Result<GuardState> from_json(const nlohmann::json& j);
};

std::string guard_owner(const std::string& id);  // "guard:<id>"
// The guards in the journal (read without the lock): id -> state.
Result<std::vector<GuardState>> list_guards(const HostPaths& paths);
// Ends a guard from any process: its processes go back where they came from, every value it set
// is restored and its cgroup removed.
Result<void> end_guard(const HostPaths& paths, tune::Tuner& tuner, const std::string& id);

}  // namespace spark::guard
