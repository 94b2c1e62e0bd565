// `spark-tune guard --unit UNIT`: the guard as a systemd drop-in (MemoryHigh, MemoryMax, OOMPolicy,
// Restart) for a service systemd runs, written through the Tuner as a `file` target (journaled,
// --undo restores exactly) after `systemd-analyze verify` accepted it (fork/exec, no shell).
#pragma once

#include <string>

#include "core/host_paths.h"
#include "core/result.h"
#include "guard/supervisor.h"
#include "tune/tuner.h"

namespace spark::guard {

struct UnitDropin {
  std::string unit;  // "llama.service"
  std::string path;  // <systemd_d>/llama.service.d/50-spark-tune-guard.conf
  std::string content;
};

// "llama" -> "llama.service"; refuses names systemd would not accept.
Result<std::string> normalize_unit_name(const std::string& name);
// Where the unit file is (etc, run, usr/lib, lib under the host's root); ENOENT when nowhere.
Result<fs::path> find_unit_file(const HostPaths& paths, const std::string& unit);
// The drop-in text for these options; footprint: what the unit uses now (0 when not running).
Result<std::string> render_dropin(const GuardOptions& o, uint64_t budget, uint64_t footprint);
// Runs `systemd-analyze verify` on a copy of the unit with the drop-in; the drop-in must draw no
// complaint. ENOENT when systemd-analyze is not installed.
Result<void> verify_dropin(const fs::path& unit_file, const std::string& unit, const std::string& content);
Result<UnitDropin> write_unit_dropin(const HostPaths& paths, tune::Tuner& tuner, const std::string& unit,
                                     const GuardOptions& o);
Result<void> undo_unit_dropin(const HostPaths& paths, tune::Tuner& tuner, const std::string& unit);

}  // namespace spark::guard
