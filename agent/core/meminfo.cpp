#include "core/meminfo.h"

#include <sstream>

#include "core/fs.h"

namespace spark {

MemInfo MemInfo::of(uint64_t total, uint64_t available, uint64_t free) {
  MemInfo m;
  m.bytes["MemTotal"] = total;
  m.bytes["MemAvailable"] = available;
  m.bytes["MemFree"] = free;
  return m;
}

std::optional<uint64_t> MemInfo::get(const std::string& field) const {
  auto it = bytes.find(field);
  if (it == bytes.end()) return std::nullopt;
  return it->second;
}

Result<MemInfo> parse_meminfo(const std::string& text) {
  MemInfo info;
  for (const auto& line : split_lines(text)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::istringstream in(line.substr(colon + 1));
    std::string number, unit;
    in >> number >> unit;
    if (number.empty() || number.find_first_not_of("0123456789") != std::string::npos)
      return input_error("meminfo: bad value for " + name + ": \"" + line + "\"");
    uint64_t v = std::stoull(number);
    if (unit == "kB")
      v *= 1024;
    else if (!unit.empty())
      return input_error("meminfo: unknown unit \"" + unit + "\" for " + name);
    info.bytes[name] = v;
  }
  if (!info.get("MemTotal") || !info.get("MemAvailable"))
    return input_error("meminfo has no MemTotal/MemAvailable (kernel older than 3.14 or not a meminfo file)");
  return info;
}

Result<MemInfo> read_meminfo(const HostPaths& paths) { return read_parsed(paths.proc / "meminfo", parse_meminfo); }

}  // namespace spark
