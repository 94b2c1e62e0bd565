// A guard's budget: growth allowed on top of the server's footprint once its load is done,
// relative to the host ("30% of available") so one launch script fits a 46 GB and a 128 GB host.
#pragma once

#include <cstdint>
#include <string>

#include "core/host_paths.h"
#include "core/meminfo.h"
#include "core/result.h"

namespace spark::guard {

struct BudgetSpec {
  enum class Kind { host_default, bytes, percent };
  Kind kind = Kind::host_default;
  uint64_t bytes = 0;
  double percent = 0;  // with base "available" (MemAvailable) or "ram"/"total" (MemTotal)
  bool of_total = false;
  std::string text;  // as the user wrote it, for messages
};

constexpr uint64_t k_default_budget_cap = 8ull << 30;
constexpr double k_default_budget_percent = 30.0;

// "" -> the default min(8 GiB, 30% of MemAvailable); "2G"; "30% of available"; "10% of ram".
Result<BudgetSpec> parse_budget(const std::string& text);
// Bytes of growth the spec allows on this host now.
uint64_t resolve_budget(const BudgetSpec& spec, const MemInfo& host);
std::string describe_budget(const BudgetSpec& spec);

}  // namespace spark::guard
