// Sizes, durations and host-relative amounts as people write them: "5G", "512MiB", "100ms", "4% of ram".
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "core/result.h"

namespace spark {

// "5G", "5GiB", "5 GB", "512M", "8k", "1.5G" (binary units: k=1024), or a plain byte count.
Result<uint64_t> parse_size(const std::string& text);
// "100ms", "180s", "2m", "1h", "1.5s", or a plain number of seconds.
Result<std::chrono::milliseconds> parse_duration(const std::string& text);
// "4% of ram" / "30% of available" / "10%": a percentage and the base it is of (empty when none given).
struct Percentage {
  double percent = 0;
  std::string base;
};
std::optional<Percentage> parse_percentage(const std::string& text);

// 5368709120 -> "5.0 GiB"; below 1 KiB the byte count.
std::string format_size(uint64_t bytes);
std::string format_duration(std::chrono::milliseconds d);

}  // namespace spark
