#include "telemetry/vmstat.h"

#include <sstream>

#include "core/fs.h"

namespace spark::telemetry {

namespace {
template <typename Map>
uint64_t sum_with_prefix(const Map& m, const std::string& prefix) {
  uint64_t sum = 0;
  for (auto it = m.lower_bound(prefix); it != m.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    sum += static_cast<uint64_t>(it->second);
  return sum;
}
}  // namespace

uint64_t VmStat::get(const std::string& name) const {
  auto it = counters.find(name);
  return it == counters.end() ? 0 : it->second;
}

uint64_t VmStat::sum_prefix(const std::string& prefix) const { return sum_with_prefix(counters, prefix); }

Result<VmStat> parse_vmstat(const std::string& text) {
  VmStat s;
  for (const auto& line : split_lines(text)) {
    std::istringstream in(line);
    std::string name, value;
    if (!(in >> name >> value)) continue;
    // A few gauges can be transiently negative per-CPU sums; clamp them to 0.
    if (!value.empty() && value[0] == '-') {
      s.counters[name] = 0;
      continue;
    }
    if (value.find_first_not_of("0123456789") != std::string::npos)
      return input_error("vmstat: bad value for " + name + ": \"" + line + "\"");
    s.counters[name] = std::stoull(value);
  }
  if (s.counters.empty()) return input_error("vmstat has no counters");
  return s;
}

Result<VmStat> read_vmstat(const HostPaths& paths) { return read_parsed(paths.proc / "vmstat", parse_vmstat); }

uint64_t VmStatDelta::get(const std::string& name) const {
  auto it = delta.find(name);
  return it == delta.end() ? 0 : it->second;
}

uint64_t VmStatDelta::sum_prefix(const std::string& prefix) const { return sum_with_prefix(delta, prefix); }

VmStatDelta vmstat_delta(const VmStat& before, const VmStat& after, double seconds) {
  VmStatDelta d;
  d.seconds = seconds;
  for (const auto& [name, now] : after.counters) {
    auto it = before.counters.find(name);
    uint64_t then = it == before.counters.end() ? now : it->second;
    if (now >= then) {
      d.delta[name] = now - then;
    } else {
      d.delta[name] = 0;
      d.decreased[name] = static_cast<int64_t>(now) - static_cast<int64_t>(then);
    }
  }
  return d;
}

}  // namespace spark::telemetry
