// Triggers: writes that ask the kernel to act now and leave no value to restore (drop the page
// cache, compact memory, move a process into a cgroup, kill a cgroup, register a cgroup event).
// They go through the Actuator like every other write, so a dry run shows them and a test injects
// their failure; each one is logged (who asked and why) before it is made.
#pragma once

#include <sys/types.h>

#include <string>

#include "core/log.h"
#include "core/result.h"
#include "state/target.h"
#include "tune/actuator.h"

namespace spark::tune {

struct Trigger {
  state::Target target;
  std::string value;
  std::string owner;   // "window:w3", "guard:g1", "preflight"
  std::string reason;  // why, for the log
  // Triggers repeated at a tick (drop_caches every 100 ms) log at debug; one-off ones at info.
  LogLevel level = LogLevel::info;
};

// Logs the trigger, then writes it through the actuator; the error says what was asked and why.
Result<void> fire(Actuator& act, const Trigger& t);

// vm.drop_caches = 3: page cache, dentries and inodes (the manual recipe; every process loses its cache).
Trigger drop_caches_trigger(const std::string& owner, const std::string& reason);
// vm.compact_memory = 1: compacts every node, synchronously.
Trigger compact_memory_trigger(const std::string& owner, const std::string& reason);

// Cgroup triggers on the cgroup named `cgroup` as a Target name under HostPaths::cgroup
// ("memory/a/spark-guard-g1" on v1, "a/spark-guard-g1" on v2, "" for the root).
// cgroup.procs = pid: moves the process (all its threads) into the cgroup.
Trigger cgroup_attach_trigger(const std::string& cgroup, pid_t pid, const std::string& owner);
// cgroup.kill = 1 (v2): SIGKILL to every process in the cgroup and below.
Trigger cgroup_kill_trigger(const std::string& cgroup, const std::string& owner);
// cgroup.event_control = "EVENTFD CONTROL_FD [ARGS]" (v1): registers an eventfd for a control file.
Trigger cgroup_event_trigger(const std::string& cgroup, const std::string& line, const std::string& owner,
                             const std::string& reason);

Result<void> drop_caches(Actuator& act, const std::string& owner, const std::string& reason);
Result<void> compact_memory(Actuator& act, const std::string& owner, const std::string& reason);

}  // namespace spark::tune
