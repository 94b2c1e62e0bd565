#include "daemon/priority.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

#include "core/fs.h"

namespace spark::daemon {

Result<std::optional<int>> nice_session_group(const HostPaths& paths) {
  errno = 0;
  int nice = ::getpriority(PRIO_PROCESS, 0);
  if (errno != 0 || nice >= 0) return std::optional<int>();
  if (::getsid(0) != ::getpid()) return std::optional<int>();
  fs::path file = paths.proc / "self/autogroup";
  std::error_code ec;
  if (!fs::exists(file, ec)) return std::optional<int>();
  SPARK_TRY_VOID(write_value(file, std::to_string(nice)));
  return std::optional<int>(nice);
}

}  // namespace spark::daemon
