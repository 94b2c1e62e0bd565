#include "core/units.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "core/fs.h"

namespace spark {

namespace {

// Splits "1.5GiB" into 1.5 and "gib"; false when the number part is not a number.
bool split_number(const std::string& text, double& number, std::string& unit) {
  std::string t = trim(text);
  size_t i = 0;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  if (i == 0) return false;
  std::string num = t.substr(0, i);
  if (std::count(num.begin(), num.end(), '.') > 1 || num == ".") return false;
  try {
    number = std::stod(num);
  } catch (...) {
    return false;
  }
  unit = trim(t.substr(i));
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return true;
}

}  // namespace

Result<uint64_t> parse_size(const std::string& text) {
  double n = 0;
  std::string unit;
  if (!split_number(text, n, unit))
    return input_error("'" + text + "' is not a size: write a number with an optional unit, e.g. 512M, 5G, 1.5GiB");
  double mult = 0;
  if (unit.empty() || unit == "b")
    mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib")
    mult = 1024.0;
  else if (unit == "m" || unit == "mb" || unit == "mib")
    mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tb" || unit == "tib")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    return input_error("'" + text + "': unknown size unit '" + unit + "' (use K, M, G or T)");
  double bytes = n * mult;
  if (bytes > 18e18) return input_error("'" + text + "' is too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

Result<std::chrono::milliseconds> parse_duration(const std::string& text) {
  double n = 0;
  std::string unit;
  if (!split_number(text, n, unit))
    return input_error("'" + text + "' is not a duration: write e.g. 100ms, 30s, 3m or 1h");
  double ms = 0;
  if (unit == "ms")
    ms = n;
  else if (unit.empty() || unit == "s" || unit == "sec")
    ms = n * 1000;
  else if (unit == "m" || unit == "min")
    ms = n * 60'000;
  else if (unit == "h")
    ms = n * 3'600'000;
  else
    return input_error("'" + text + "': unknown duration unit '" + unit + "' (use ms, s, m or h)");
  if (ms > 1e13) return input_error("'" + text + "' is too long");
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

std::optional<Percentage> parse_percentage(const std::string& text) {
  std::string t = trim(text);
  size_t pct = t.find('%');
  if (pct == std::string::npos) return std::nullopt;
  double n = 0;
  std::string unit;
  if (!split_number(t.substr(0, pct), n, unit) || !unit.empty()) return std::nullopt;
  std::string rest = trim(t.substr(pct + 1));
  for (auto& c : rest) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  Percentage p{n, ""};
  if (rest.empty()) return p;
  if (rest.rfind("of", 0) != 0) return std::nullopt;
  p.base = trim(rest.substr(2));
  if (p.base.empty()) return std::nullopt;
  return p;
}

std::string format_size(uint64_t bytes) {
  static const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::string format_duration(std::chrono::milliseconds d) {
  auto ms = d.count();
  char buf[32];
  if (ms < 1000)
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
  else if (ms < 60'000)
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000);
  else
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(ms / 60'000),
                  static_cast<long long>((ms % 60'000) / 1000));
  return buf;
}

}  // namespace spark
