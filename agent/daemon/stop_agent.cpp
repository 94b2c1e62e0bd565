#include "daemon/stop_agent.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <csignal>

#include "core/fd.h"
#include "core/fs.h"
#include "daemon/protocol.h"

namespace spark::daemon {

Result<std::optional<pid_t>> running_agent(const HostPaths& paths) {
  fs::path p = pid_file(paths);
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<pid_t>{};
    return errno_error("opening " + p.string());
  }
  Fd closer(fd);
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) return std::optional<pid_t>{};  // nobody holds it: a dead agent's
  if (errno != EWOULDBLOCK) return errno_error("locking " + p.string());
  SPARK_TRY(std::string text, read_value(p));
  std::string digits = trim(text);
  long pid = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
  if (ec != std::errc() || end != digits.data() + digits.size() || pid <= 0 || pid > 0x7fffffff)
    return sys_error(EBADMSG, p.string() + " is locked by a running agent but holds no pid ('" + text + "')");
  return std::optional<pid_t>{static_cast<pid_t>(pid)};
}

Result<std::optional<pid_t>> stop_agent(const HostPaths& paths, std::chrono::milliseconds wait) {
  SPARK_TRY(std::optional<pid_t> pid, running_agent(paths));
  if (!pid) return pid;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, *pid, 0));
  if (pidfd < 0) {
    if (errno == ESRCH) return pid;  // it exited meanwhile
    return errno_error("pidfd_open " + std::to_string(*pid));
  }
  Fd closer(pidfd);
  if (::syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, nullptr, 0) != 0) {
    if (errno == ESRCH) return pid;
    return errno_error("stopping the agent (pid " + std::to_string(*pid) + ")");
  }
  pollfd p{pidfd, POLLIN, 0};
  int rc;
  do rc = ::poll(&p, 1, static_cast<int>(wait.count()));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return errno_error("waiting for the agent (pid " + std::to_string(*pid) + ")");
  if (rc == 0)
    return sys_error(ETIMEDOUT, "the agent (pid " + std::to_string(*pid) + ") did not exit within " +
                                    std::to_string(wait.count() / 1000) + " s of SIGTERM");
  return pid;
}

}  // namespace spark::daemon
