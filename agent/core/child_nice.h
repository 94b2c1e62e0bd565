// The agent may run ahead of the host's loads (its unit's Nice=, install/spark-tune.service); what
// it starts for users -- restarted servers, hooks, --on-floor commands -- must not: they run at the
// default priority, nice 0, as anything the user starts would. Linux keeps the nice value per
// thread, and a new process takes that of the thread that created it.
#pragma once

#include <sys/resource.h>

#include <cerrno>
#include <optional>

namespace spark {

// In a forked child before exec (one or two system calls, nothing else): nice 0 when it is below.
inline void child_default_nice() {
  errno = 0;
  int n = ::getpriority(PRIO_PROCESS, 0);
  if (n < 0 && errno == 0) (void)::setpriority(PRIO_PROCESS, 0, 0);
}

// Around a posix_spawn (it has no nice attribute): the calling thread at nice 0 while it spawns,
// then back. Going back below 0 needs CAP_SYS_NICE, which the agent keeps; without it the thread
// stays at 0 (slower answers under load; never a user's process ahead of the loads).
class DefaultNiceWhileSpawning {
 public:
  DefaultNiceWhileSpawning() {
    errno = 0;
    int n = ::getpriority(PRIO_PROCESS, 0);
    if (n < 0 && errno == 0 && ::setpriority(PRIO_PROCESS, 0, 0) == 0) saved_ = n;
  }
  ~DefaultNiceWhileSpawning() {
    if (saved_) (void)::setpriority(PRIO_PROCESS, 0, *saved_);
  }
  DefaultNiceWhileSpawning(const DefaultNiceWhileSpawning&) = delete;
  DefaultNiceWhileSpawning& operator=(const DefaultNiceWhileSpawning&) = delete;

 private:
  std::optional<int> saved_;
};

}  // namespace spark
