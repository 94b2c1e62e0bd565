// systemd drop-ins that keep a unit usable under memory pressure: a memory floor (MemoryMin), a
// soft floor (MemoryLow), a low OOM score (OOMScoreAdjust, services) and ManagedOOMPreference=avoid
// (systemd-oomd kills it last). Every drop-in is validated with `systemd-analyze verify` first (a
// failed verify changes nothing), then written through the Tuner as a journaled `file` target (its
// .d directory a `dir` target) owned by "protect:UNIT": --undo releases that owner, and
// `spark-tune revert` or a crash restore exactly what was there before.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "tune/actuator.h"

namespace spark {

inline constexpr const char* k_protect_dropin = "50-spark-tune-protect.conf";
inline constexpr const char* k_protect_marker = "# Written by spark-tune protect";

struct ProtectSpec {
  uint64_t memory_min = 256ull << 20;
  uint64_t memory_low = 1ull << 30;
  int oom_score_adjust = -900;
};

// "sshd" -> "sshd.service"; only .service and .slice units; EINVAL with what to write otherwise.
Result<std::string> protect_unit_name(const std::string& arg);
fs::path protect_dropin_path(const HostPaths& paths, const std::string& unit);
// The journal owner of a unit's drop-in: "protect:sshd.service".
std::string protect_owner(const std::string& unit);
std::string protect_dropin_text(const std::string& unit, const ProtectSpec& spec);
// Runs systemd-analyze verify (fork/exec, argv) on a stub of the unit with this drop-in;
// the error quotes what systemd said about the drop-in.
Result<void> verify_dropin(const std::string& unit, const std::string& text);

struct ProtectChange {
  std::string unit;
  fs::path path;
  bool changed = false;  // false: the same drop-in was there already / nothing to remove
};
// One transaction per unit, all verified before the first; when a later unit fails, the units this
// call already changed are put back (released, or returned to their earlier drop-in).
Result<std::vector<ProtectChange>> protect_units(const HostPaths& paths, tune::Actuator& act,
                                                 const std::vector<std::string>& units, const ProtectSpec& spec);
// Releases the units' "protect:UNIT" owners. Refuses (nothing changed) a file at protect's path that
// protect did not write, or one the journal does not know (it names the file to remove by hand).
Result<std::vector<ProtectChange>> unprotect_units(const HostPaths& paths, tune::Actuator& act,
                                                   const std::vector<std::string>& units);

}  // namespace spark
