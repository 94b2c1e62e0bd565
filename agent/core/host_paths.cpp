#include "core/host_paths.h"

#include <cstdlib>

namespace spark {

HostPaths HostPaths::system() {
  HostPaths p;
  if (const char* s = std::getenv("SPARK_TUNE_STATE_DIR"); s && *s) p.state = s;
  if (const char* r = std::getenv("SPARK_TUNE_RUN_DIR"); r && *r) p.run = r;
  return p;
}

HostPaths HostPaths::under(const fs::path& root) {
  HostPaths p;
  p.proc = root / "proc";
  p.sys = root / "sys";
  p.cgroup = root / "sys/fs/cgroup";
  p.debugfs = root / "sys/kernel/debug";
  p.tracefs = root / "sys/kernel/tracing";
  p.etc = root / "etc/spark-tune";
  p.sysctl_d = root / "etc/sysctl.d";
  p.systemd_d = root / "etc/systemd/system";
  p.run = root / "run/spark-tune";
  p.state = root / "var/lib/spark-tune";
  p.host_root = root;
  return p;
}

}  // namespace spark
