// Helpers for integration tests that run agents and talk to them: private run/state dirs, a call
// made as an unprivileged user, a bound unix socket.
#pragma once

#include <filesystem>
#include <string>

#include "core/host_paths.h"

namespace spark::test {

namespace fs = std::filesystem;

// A private temp dir "/tmp/<prefix>-XXXXXX" (mode 0700) for agents a test starts:
// SPARK_TUNE_STATE_DIR=<dir>/state and SPARK_TUNE_RUN_DIR=<dir>/run are set in this process (every
// spark-tune it runs inherits them; HostPaths::system() then points there). The variables are
// unset and the dir removed on destruction.
class AgentDirs {
 public:
  explicit AgentDirs(const std::string& prefix);
  ~AgentDirs();
  AgentDirs(const AgentDirs&) = delete;
  AgentDirs& operator=(const AgentDirs&) = delete;

  bool ok() const { return !dir_.empty(); }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

// Calls `method` on the agent at paths.run from a forked child that runs as uid/gid 65534 with no
// supplementary groups. Returns "allowed", or "<errno> <message>" of the refusal, or
// "setuid failed" when the child could not drop to that user.
std::string call_agent_as_nobody(const HostPaths& paths, const std::string& method);

// A unix socket of `type` (SOCK_STREAM, SOCK_DGRAM) bound to `path`, close-on-exec; -1 on failure.
int bind_unix_socket(const fs::path& path, int type);

}  // namespace spark::test
