// Every pseudo-filesystem and state path goes through HostPaths, so tests point it at a fixture tree.
#pragma once

#include <filesystem>
#include <string>

namespace spark {

namespace fs = std::filesystem;

struct HostPaths {
  fs::path proc = "/proc";
  fs::path sys = "/sys";
  fs::path cgroup = "/sys/fs/cgroup";
  fs::path debugfs = "/sys/kernel/debug";
  fs::path tracefs = "/sys/kernel/tracing";
  fs::path etc = "/etc/spark-tune";
  fs::path sysctl_d = "/etc/sysctl.d";
  fs::path systemd_d = "/etc/systemd/system";
  fs::path run = "/run/spark-tune";
  fs::path state = "/var/lib/spark-tune";
  // The host's own configuration tree, for reading what other tools configure (sysctl.d, tuned).
  fs::path host_root = "/";

  // The real host; SPARK_TUNE_STATE_DIR and SPARK_TUNE_RUN_DIR override the two writable dirs.
  static HostPaths system();
  // Everything under one fixture root (proc under root/proc, state under root/var/lib/spark-tune, ...).
  static HostPaths under(const fs::path& root);

  fs::path proc_sys(const std::string& relative) const { return proc / "sys" / relative; }
  fs::path journal_file() const { return state / "journal.json"; }
  fs::path lock_file() const { return state / "lock"; }
  fs::path boot_id_file() const { return proc / "sys/kernel/random/boot_id"; }
};

}  // namespace spark
