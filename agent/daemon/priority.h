// The agent's priority against the host's loads (issue 13, the soak). The unit's Nice= (install/
// spark-tune.service) sets the agent's nice value, but where the kernel groups tasks by session
// (CONFIG_SCHED_AUTOGROUP, /proc/sys/kernel/sched_autogroup_enabled: on by default in most
// distribution kernels, and used for every task outside a cpu cgroup of its own) a nice value only
// weighs against the tasks of its own session: the session's group competes with every other
// session's as an equal. systemd starts each service in a session of its own, so Nice= alone gave
// the agent nothing against the loads (the soak: at nice -10 its loop still waited for a CPU 64%
// of the time). The session's group gets the same nice here.
#pragma once

#include <optional>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark::daemon {

// When this process runs at a nice value below 0 and leads its own session (never a shell's
// session: that would raise everything started from the terminal), its autogroup is given that
// nice (/proc/self/autogroup). Returns the value written; nullopt when there was nothing to do
// (nice 0 or above, not a session leader, no autogroup file); an error when the write failed
// (without CAP_SYS_NICE).
Result<std::optional<int>> nice_session_group(const HostPaths& paths);

}  // namespace spark::daemon
