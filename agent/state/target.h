// What spark-tune can change: a kernel setting or a file, named independently of where the host's
// pseudo-filesystems are mounted (HostPaths resolves the name to a path).
#pragma once

#include <compare>
#include <optional>
#include <string>

#include "core/result.h"

namespace spark::state {

enum class TargetKind {
  sysctl,  // "vm.min_free_kbytes" -> <proc>/sys/vm/min_free_kbytes
  sysfs,   // "block/sda/queue/read_ahead_kb" -> <sys>/block/sda/queue/read_ahead_kb
  cgroup,  // "memory/spark/g1/memory.limit_in_bytes" -> <cgroup>/memory/spark/g1/...
  file,    // an absolute path of a file spark-tune owns (sysctl.d and systemd drop-ins); may be absent
  dir,     // an absolute path of a directory spark-tune created (a cgroup); absent = removed
};

const char* target_kind_name(TargetKind k);
Result<TargetKind> parse_target_kind(const std::string& s);

struct Target {
  TargetKind kind = TargetKind::sysctl;
  std::string name;

  std::string display() const;  // "vm.dirty_ratio", "sysfs:block/sda/queue/read_ahead_kb"
  auto operator<=>(const Target&) const = default;
};

inline Target sysctl_target(std::string name) { return {TargetKind::sysctl, std::move(name)}; }
inline Target sysfs_target(std::string name) { return {TargetKind::sysfs, std::move(name)}; }

// A sysctl name is dotted words of [a-z0-9_-]: no "/", no "..", no empty part. Says why not.
Result<void> validate_sysctl_name(const std::string& name);
// A relative sysfs/cgroup name: no "..", no empty part, no leading "/".
Result<void> validate_relative_name(const std::string& name);

}  // namespace spark::state
