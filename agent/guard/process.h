// Processes a guard starts or watches: hooks (core/process.h's spawn_process, no shell, event on
// stdin and in SPARK_TUNE_EVENT), restarted servers (spawn_process with a gate: join the box, then
// exec), pidfds, and port readiness.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/port.h"
#include "core/proc_stat.h"
#include "core/result.h"
#include "guard/cgroup.h"

namespace spark::guard {

// argv[0] resolved through PATH (no shell); an error saying so when it is missing or not executable.
Result<std::string> resolve_executable(const std::string& argv0);
// Splits "CMD ARG ..." on blanks (no quoting, no shell expansion).
std::vector<std::string> split_command(const std::string& text);

// A pidfd for any process (readable when it exits); ESRCH when it is gone.
Result<Fd> open_pidfd(pid_t pid);
// Reaps a child without blocking; the wait status when it has exited.
std::optional<int> reap_child(pid_t pid);

// write(2) to a pipe whose reader may be gone: EPIPE comes back as an error, never as SIGPIPE.
Result<void> write_without_sigpipe(int fd, const std::string& data);

struct SpawnedHook {
  pid_t pid = -1;
  std::chrono::steady_clock::time_point started;
};
// Runs a hook: argv[0] must be a resolved executable path; the event JSON on its stdin and in
// SPARK_TUNE_EVENT; stdout/stderr inherited.
Result<SpawnedHook> spawn_hook(const std::vector<std::string>& argv, const std::string& event_json);

struct ServerLaunch {
  std::vector<std::string> argv;  // argv[0] resolved
  std::string cwd;
  uid_t uid = 0;
  gid_t gid = 0;
  int oom_score_adj = 0;  // the original server's, given to each restart (not the agent's -900)
};
// Starts a server inside the box: the child is moved into the cgroup (through the actuator) before
// it execs, so its first page is charged to the box. A new session, stdin from /dev/null.
Result<pid_t> spawn_in_box(const ServerLaunch& launch, const CgroupBox& box, tune::Actuator& act);
// The same with the step that moves the waiting child given by the caller (a systemd scope asked
// for with the child's pid, where systemd owns the tree). The child execs only once it succeeded.
using JoinBox = std::function<Result<void>(pid_t)>;
Result<pid_t> spawn_gated(const ServerLaunch& launch, const JoinBox& join);

// HOST:PORT readiness: core/port.h.

// Resident bytes of a process (statm) and its comm; 0 / "" when gone.
uint64_t process_rss(const HostPaths& paths, pid_t pid);
std::string process_comm(const HostPaths& paths, pid_t pid);

}  // namespace spark::guard
