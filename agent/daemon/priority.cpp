#include "daemon/priority.h"

#include <unistd.h>

#include "core/child_nice.h"
#include "core/fs.h"

namespace spark::daemon {

Result<std::optional<int>> nice_session_group(const HostPaths& paths) {
  auto current = current_nice();
  if (!current || *current >= 0) return std::optional<int>();
  int nice = *current;
  if (::getsid(0) != ::getpid()) return std::optional<int>();
  fs::path file = paths.proc / "self/autogroup";
  std::error_code ec;
  if (!fs::exists(file, ec)) return std::optional<int>();
  SPARK_TRY_VOID(write_value(file, std::to_string(nice)));
  return std::optional<int>(nice);
}

}  // namespace spark::daemon
