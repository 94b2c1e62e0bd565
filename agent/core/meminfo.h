// /proc/meminfo, in bytes: the one type and the one parser for the host's memory figures (profiles,
// guards' budgets, windows, preflight, doctor, telemetry). Every field the kernel prints is kept;
// the ones in use have accessors.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark {

struct MemInfo {
  std::map<std::string, uint64_t> bytes;  // "MemAvailable" -> bytes ("HugePages_Total" is a count)

  // The figures a rule works from, for tests and callers that have no meminfo text.
  static MemInfo of(uint64_t total, uint64_t available, uint64_t free = 0);

  std::optional<uint64_t> get(const std::string& field) const;
  uint64_t value(const std::string& field) const { return get(field).value_or(0); }
  uint64_t total() const { return value("MemTotal"); }
  uint64_t free() const { return value("MemFree"); }
  uint64_t available() const { return value("MemAvailable"); }
  uint64_t cached() const { return value("Cached"); }
  uint64_t dirty() const { return value("Dirty"); }
  uint64_t writeback() const { return value("Writeback"); }
  uint64_t anon() const { return value("AnonPages"); }
  uint64_t unevictable() const { return value("Unevictable"); }
  uint64_t mlocked() const { return value("Mlocked"); }
};

// "Name:   123 kB" lines (values without a unit are counts and kept as they are).
// MemTotal and MemAvailable must be present.
Result<MemInfo> parse_meminfo(const std::string& text);
Result<MemInfo> read_meminfo(const HostPaths& paths);

}  // namespace spark
