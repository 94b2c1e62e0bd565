#include "guard/budget.h"

#include <algorithm>

#include "core/fs.h"
#include "core/units.h"
#include "guard/cgroup.h"

namespace spark::guard {

Result<BudgetSpec> parse_budget(const std::string& text) {
  BudgetSpec s;
  s.text = trim(text);
  if (s.text.empty() || s.text == "default") return s;
  if (auto p = parse_percentage(s.text)) {
    if (p->percent <= 0 || p->percent > 100)
      return input_error("--budget '" + s.text + "': the percentage must be in (0, 100]");
    if (p->base.empty() || p->base == "available" || p->base == "memavailable")
      s.of_total = false;
    else if (p->base == "ram" || p->base == "total" || p->base == "memtotal")
      s.of_total = true;
    else
      return input_error("--budget '" + s.text +
                         "': write a percentage of 'available' or 'ram', e.g. \"30% of available\"");
    s.kind = BudgetSpec::Kind::percent;
    s.percent = p->percent;
    return s;
  }
  auto b = parse_size(s.text);
  if (!b) return input_error("--budget '" + s.text + "': write a size (2G, 512MiB) or \"30% of available\"");
  if (*b == 0) return input_error("--budget must be more than 0");
  s.kind = BudgetSpec::Kind::bytes;
  s.bytes = *b;
  return s;
}

uint64_t resolve_budget(const BudgetSpec& spec, const MemInfo& host) {
  switch (spec.kind) {
    case BudgetSpec::Kind::bytes:
      return spec.bytes;
    case BudgetSpec::Kind::percent: {
      double base = static_cast<double>(spec.of_total ? host.total() : host.available());
      return page_round(static_cast<uint64_t>(base * spec.percent / 100.0));
    }
    case BudgetSpec::Kind::host_default:
      break;
  }
  auto pct = static_cast<uint64_t>(static_cast<double>(host.available()) * k_default_budget_percent / 100.0);
  return page_round(std::min(k_default_budget_cap, pct));
}

std::string describe_budget(const BudgetSpec& spec) {
  switch (spec.kind) {
    case BudgetSpec::Kind::bytes:
      return format_size(spec.bytes);
    case BudgetSpec::Kind::percent:
      return spec.text;
    case BudgetSpec::Kind::host_default:
      break;
  }
  return "min(8 GiB, 30% of available)";
}

}  // namespace spark::guard
