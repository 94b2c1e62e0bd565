#include "support/agent_client.h"

#include <grp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "daemon/protocol.h"

namespace spark::test {

AgentDirs::AgentDirs(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return;
  dir_ = tmpl;
  ::setenv("SPARK_TUNE_STATE_DIR", (dir_ / "state").c_str(), 1);
  ::setenv("SPARK_TUNE_RUN_DIR", (dir_ / "run").c_str(), 1);
}

AgentDirs::~AgentDirs() {
  if (dir_.empty()) return;
  ::unsetenv("SPARK_TUNE_STATE_DIR");
  ::unsetenv("SPARK_TUNE_RUN_DIR");
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string call_agent_as_nobody(const HostPaths& paths, const std::string& method) {
  int p[2];
  if (::pipe(p) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    std::string result;
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
      result = "setuid failed";
    } else {
      auto r = daemon::call(paths, method, nlohmann::json::object(), std::chrono::seconds(2));
      result = r ? "allowed" : std::to_string(r.error().code().value()) + " " + r.error().what();
    }
    (void)::write(p[1], result.data(), result.size());
    ::_exit(0);
  }
  ::close(p[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  ::waitpid(pid, nullptr, 0);
  return out;
}

int bind_unix_socket(const fs::path& path, int type) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof(addr.sun_path)) return -1;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  int fd = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace spark::test
