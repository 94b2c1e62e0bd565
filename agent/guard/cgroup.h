// The guard's box: a memory cgroup of its own, cgroup v1 (memory controller hierarchy) or v2
// (unified). Paths come from HostPaths, so unit tests drive both versions on fake trees.
// Limits are not written here: limit_changes() describes them for the Tuner (journaled, restored).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/fd.h"
#include "core/host_paths.h"
#include "core/memory_cgroup.h"
#include "core/result.h"
#include "tune/tuner.h"

namespace spark::guard {

// The hierarchy and a process's memory cgroup come from the one detector (core/memory_cgroup.h).

// v2: where a box can be made for a process in cgroup `own`. A child gets memory.max only when its
// parent enables the controller in cgroup.subtree_control, and v2's no-internal-process rule keeps
// a cgroup that has processes (the agent's own, the test's leaf) from enabling it. So the box goes
// under the nearest cgroup from `own` up (the root included) that already enables memory for its
// children: `own` itself when it is delegated that way, else e.g. the delegated cgroup above the
// leaf the agent runs in. Nothing is enabled here; ENOTSUP says what to do when none does.
Result<std::string> v2_box_parent(const HostPaths& paths, const MemoryHierarchy& h, const std::string& own);

// A memory limit the process in cgroup `cur` is under now and would lose in a box under `parent`:
// the nearest cgroup from `cur` up that is not an ancestor of `parent` (nor `parent` itself) and
// has a limit (v1 memory.limit_in_bytes below the unlimited value, v2 memory.max not "max").
// Returns "<cgroup> (memory.max 500.0 MiB)", or nullopt when no limit would be lost.
std::optional<std::string> lost_memory_limit(const MemoryHierarchy& h, const std::string& cur,
                                             const std::string& parent);

struct MemoryStats {
  uint64_t usage = 0;            // charged bytes (v1 memory.usage_in_bytes, v2 memory.current)
  uint64_t anon = 0;             // anonymous memory (v1 total_rss, v2 anon): what reclaim cannot drop without swap
  uint64_t file = 0;             // page cache (v1 total_cache, v2 file)
  uint64_t peak = 0;             // v1 memory.max_usage_in_bytes, v2 memory.peak (0 where absent)
  uint64_t oom = 0;              // v2 memory.events oom; v1 under_oom (0/1)
  uint64_t oom_kills = 0;        // kills the kernel's OOM killer counted in this cgroup (v2: a group
                                 // kill counts its chosen victim twice)
  uint64_t oom_group_kills = 0;  // v2 memory.events oom_group_kill (0 on v1)
  uint64_t high_events = 0;      // v2 memory.events high (throttling)
};

// The part of memory.events (v2) the guard reads; missing keys are 0.
struct MemoryEvents {
  uint64_t low = 0, high = 0, max = 0, oom = 0, oom_kill = 0, oom_group_kill = 0;
};
Result<MemoryEvents> parse_memory_events(const std::string& text);
// "key value" lines (memory.stat, memory.oom_control) -> value of key, nullopt when absent.
std::optional<uint64_t> stat_value(const std::string& text, const std::string& key);

struct Limits {
  std::optional<uint64_t> high;  // v2 memory.high (throttle + reclaim); v1 memory.soft_limit_in_bytes
  std::optional<uint64_t> max;   // v2 memory.max; v1 memory.limit_in_bytes: beyond it the kernel OOM-kills inside
  bool oom_group = true;         // v2 memory.oom.group: the whole box is killed together (no half-dead server)
};

// Rounds down to the page size, as the kernel does when it stores a limit (so read-back matches).
uint64_t page_round(uint64_t bytes);

class CgroupBox {
 public:
  CgroupBox(HostPaths paths, MemoryHierarchy h, std::string path);
  const std::string& path() const { return path_; }  // "/process_api/<id>/spark-guard-g1"
  CgroupVersion version() const { return h_.version; }
  fs::path dir() const;
  fs::path file(const std::string& name) const { return dir() / name; }
  state::Target dir_target() const;
  state::Target file_target(const std::string& name) const;
  // The box as a Target name under HostPaths::cgroup ("memory/a/spark-guard-g1", "a/spark-guard-g1").
  std::string target_name() const;
  bool exists() const;

  // The Tuner changes that set the limits (values page-rounded).
  std::vector<tune::Change> limit_changes(const Limits& limits, const std::string& reason) const;
  // Moves a process (all its threads) into the box: a cgroup.procs trigger through the actuator.
  Result<void> attach(tune::Actuator& act, pid_t pid) const;
  Result<std::vector<pid_t>> procs() const;
  Result<MemoryStats> stats() const;
  // Kills every process in the box: v2 cgroup.kill (a trigger) where present, else SIGKILL to each member.
  Result<void> kill_all(tune::Actuator& act) const;
  // Moves every process in the box to another cgroup of the same hierarchy (when a guard ends).
  Result<void> move_all_to(tune::Actuator& act, const std::string& other_path) const;

 private:
  HostPaths paths_;
  MemoryHierarchy h_;
  std::string path_;
};

// v1: an eventfd registered through cgroup.event_control for a control file of the box:
// memory.oom_control (OOM notification, args "") or memory.pressure_level (args "low|medium|critical").
// Readable (POLLIN) when the event fires; drain it with drain_eventfd().
// The cgroup.event_control write is a trigger through the actuator.
Result<Fd> register_v1_event(tune::Actuator& act, const CgroupBox& box, const std::string& control_file,
                             const std::string& args);
uint64_t drain_eventfd(int fd);
// v2: memory.events opened for POLLPRI change notification (kernfs); re-read after each wake-up.
Result<Fd> open_events_watch(const CgroupBox& box);

}  // namespace spark::guard
