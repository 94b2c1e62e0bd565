// The agent may run ahead of the host's loads (its unit's Nice=, install/spark-tune.service); what
// it starts -- restarted servers, hooks, --on-floor commands, probes and validators -- must not:
// they run at the default priority, nice 0, as anything the user starts would. Linux keeps the nice
// value per thread, and a new process takes that of the thread that created it. Every child takes
// core/process.h's spawn_process, which calls child_default_nice() in the child before exec.
#pragma once

#include <sys/resource.h>

#include <cerrno>
#include <optional>

namespace spark {

// The calling thread's nice value; nullopt when getpriority fails (-1 is also a valid nice, so
// errno tells them apart). One system call, async-signal-safe.
inline std::optional<int> current_nice() {
  errno = 0;
  int n = ::getpriority(PRIO_PROCESS, 0);
  if (n == -1 && errno != 0) return std::nullopt;
  return n;
}

// In a forked child before exec (one or two system calls, nothing else): nice 0 when it is below.
inline void child_default_nice() {
  if (auto n = current_nice(); n && *n < 0) (void)::setpriority(PRIO_PROCESS, 0, 0);
}

}  // namespace spark
