// /proc/PID/stat, read once and one rule for "has this process finished?". Every caller that asks
// whether a process lives (a window's watched pid, a guard's server, a GPU holder) uses this.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark {

struct ProcStat {
  pid_t pid = 0;
  std::string comm;  // between the first '(' and the last ')': may hold blanks and ')'
  char state = '?';  // R S D T t Z X I ...
  pid_t ppid = 0;
  uint64_t flags = 0;       // PF_* (field 9)
  uint64_t start_time = 0;  // clock ticks after boot (field 22): with the pid, names one process

  // The one liveness rule: a process has finished when it is a zombie (Z), dead (X) or exiting
  // (PF_EXITING: its memory, GPU memory included, is being freed).
  bool finished() const;
};

inline constexpr uint64_t k_pf_exiting = 0x4;

// Parses one stat line; an error names what is wrong with it.
Result<ProcStat> parse_proc_stat(const std::string& text);
// <proc>/<pid>/stat; ESRCH when the process is gone.
Result<ProcStat> read_proc_stat(const HostPaths& paths, pid_t pid);

// True when the process exists and has not finished (ProcStat::finished). With start_time, the
// pid must also still name the same process (not a new one that reused it).
bool process_alive(const HostPaths& paths, pid_t pid, std::optional<uint64_t> start_time = std::nullopt);

}  // namespace spark
