// systemd drop-ins that keep a unit usable under memory pressure: a memory floor (MemoryMin), a
// soft floor (MemoryLow), a low OOM score (OOMScoreAdjust, services) and ManagedOOMPreference=avoid
// (systemd-oomd kills it last). Each drop-in is validated with `systemd-analyze verify` before it is
// written; --undo removes exactly what protect wrote (its own file, and the .d directory only when
// protect created it and it is empty).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark {

inline constexpr const char* k_protect_dropin = "50-spark-tune-protect.conf";
inline constexpr const char* k_protect_marker = "# Written by spark-tune protect";
inline constexpr const char* k_protect_created_dir = "# spark-tune created this directory";

struct ProtectSpec {
  uint64_t memory_min = 256ull << 20;
  uint64_t memory_low = 1ull << 30;
  int oom_score_adjust = -900;
};

// "sshd" -> "sshd.service"; only .service and .slice units; EINVAL with what to write otherwise.
Result<std::string> protect_unit_name(const std::string& arg);
fs::path protect_dropin_path(const HostPaths& paths, const std::string& unit);
std::string protect_dropin_text(const std::string& unit, const ProtectSpec& spec, bool created_dir);
// Runs systemd-analyze verify (fork/exec, argv) on a stub of the unit with this drop-in;
// the error quotes what systemd said about the drop-in.
Result<void> verify_dropin(const std::string& unit, const std::string& text);

struct ProtectChange {
  std::string unit;
  fs::path path;
  bool changed = false;  // false: the same drop-in was there already / nothing to remove
};
// All units validated and verified before the first write; a failed write restores what this call wrote.
Result<std::vector<ProtectChange>> protect_units(const HostPaths& paths, const std::vector<std::string>& units,
                                                 const ProtectSpec& spec);
// Removes protect's drop-ins; refuses a file of that name that protect did not write.
Result<std::vector<ProtectChange>> unprotect_units(const HostPaths& paths, const std::vector<std::string>& units);

}  // namespace spark
