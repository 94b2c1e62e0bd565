#include "guard/unit.h"

#include <unistd.h>

#include <cstdlib>

#include "core/fs.h"
#include "core/systemd_unit.h"
#include "core/units.h"
#include "guard/budget.h"
#include "guard/cgroup.h"
#include "guard/process.h"
#include "state/journal.h"

using spark::state::JournalData, spark::state::TargetKind, spark::state::read_journal;

using spark::tune::ApplyOptions, spark::tune::Tuner;

namespace spark::guard {

namespace {

constexpr const char* k_dropin_name = "50-spark-tune-guard.conf";

std::string owner_of(const std::string& unit) { return "guard-unit:" + unit; }

fs::path host_root(const HostPaths& paths) {
  // systemd_d is <root>/etc/systemd/system on the host and in fixture trees alike.
  return paths.systemd_d.parent_path().parent_path().parent_path();
}

}  // namespace

Result<std::string> normalize_unit_name(const std::string& name) {
  return spark::normalize_unit_name(name, {".service"}, "--unit");
}

Result<fs::path> find_unit_file(const HostPaths& paths, const std::string& unit) {
  fs::path root = host_root(paths);
  for (const char* dir : {"etc/systemd/system", "run/systemd/system", "usr/local/lib/systemd/system",
                          "usr/lib/systemd/system", "lib/systemd/system"}) {
    fs::path p = root / dir / unit;
    std::error_code ec;
    if (fs::exists(p, ec)) return p;
  }
  // Template instances: llama@8080.service -> llama@.service.
  auto at = unit.find('@');
  if (at != std::string::npos && unit.compare(at + 1, std::string::npos, ".service") != 0)
    return find_unit_file(paths, unit.substr(0, at + 1) + ".service");
  return sys_error(ENOENT, "unit " + unit + " does not exist (no unit file under " +
                               (root / "etc/systemd/system").string() + ", /run, /usr/lib or /lib systemd/system)");
}

Result<std::string> render_dropin(const GuardOptions& o, uint64_t budget, uint64_t footprint) {
  uint64_t max = o.memory_max ? *o.memory_max : footprint + budget;
  std::string s = "# Written by spark-tune guard --unit; remove with: spark-tune guard --unit UNIT --undo\n";
  if (o.restart) {
    s += "[Unit]\n";
    s += "StartLimitIntervalSec=" + std::to_string(std::max<int64_t>(1, o.restart_window.count() / 1000)) + "\n";
    s += "StartLimitBurst=" + std::to_string(o.restart_max) + "\n";
  }
  s += "[Service]\n";
  s += "MemoryAccounting=yes\n";
  // MemoryHigh only when asked (--memory-high): a derived one throttles the server instead of
  // letting MemoryMax end it (docs/guard.md, "Budget").
  if (o.memory_high) s += "MemoryHigh=" + std::to_string(page_round(std::min(*o.memory_high, max))) + "\n";
  s += "MemoryMax=" + std::to_string(page_round(max)) + "\n";
  s += "OOMPolicy=kill\n";
  if (o.restart) {
    s += "Restart=on-failure\n";
    s += "RestartSec=" + std::to_string(o.restart_backoff.count()) + "ms\n";
  }
  return s;
}

Result<void> verify_dropin(const fs::path& unit_file, const std::string& unit, const std::string& content) {
  SPARK_TRY(std::string text, read_file(unit_file));
  return spark::verify_dropin(unit, text, k_dropin_name, content);
}

Result<UnitDropin> write_unit_dropin(const HostPaths& paths, Tuner& tuner, const std::string& name,
                                     const GuardOptions& o) {
  SPARK_TRY(std::string unit, normalize_unit_name(name));
  SPARK_TRY(BudgetSpec spec, parse_budget(o.budget));
  SPARK_TRY(MemInfo host, read_meminfo(paths));
  uint64_t budget = resolve_budget(spec, host);
  if (o.restart_max < 1) return input_error("--restart-max must be at least 1");
  if (!o.on_oom.empty() || !o.until_port.empty())
    return input_error("--on-oom and --until-port need the guard supervisor: use --pid with the service's main pid");
  SPARK_TRY(fs::path unit_file, find_unit_file(paths, unit));
  // What the service uses now, where it runs (system.slice): the budget is growth on top of it.
  uint64_t footprint = 0;
  if (auto h = find_memory_hierarchy(paths); h.ok()) {
    CgroupBox box(paths, *h, "/system.slice/" + unit);
    if (box.exists())
      if (auto s = box.stats(); s.ok()) footprint = s->usage;
  }
  uint64_t max = o.memory_max ? *o.memory_max : footprint + budget;
  if (max > host.total())
    return input_error("MemoryMax " + format_size(max) + " is above the host's RAM (" + format_size(host.total()) +
                       "): give a smaller --budget or --memory-max");
  if (o.memory_max && footprint && *o.memory_max < footprint && !o.force)
    return input_error("--memory-max " + format_size(*o.memory_max) + " is below what " + unit + " uses now (" +
                       format_size(footprint) + "): raise it or pass --force");
  SPARK_TRY(std::string content, render_dropin(o, budget, footprint));
  SPARK_TRY_VOID(verify_dropin(unit_file, unit, content));
  fs::path path = paths.systemd_d / (unit + ".d") / k_dropin_name;
  ApplyOptions ao;
  ao.owner_state = {{"kind", "guard_unit"}, {"unit", unit}, {"path", path.string()}};
  auto r = tuner.apply(owner_of(unit), {{{TargetKind::file, path.string()}, content, "guard drop-in for " + unit}}, ao);
  if (!r) return with_context(r.error(), "writing the drop-in for " + unit);
  return UnitDropin{unit, path.string(), content};
}

Result<void> undo_unit_dropin(const HostPaths& paths, Tuner& tuner, const std::string& name) {
  SPARK_TRY(std::string unit, normalize_unit_name(name));
  SPARK_TRY(JournalData d, read_journal(paths));
  if (!d.owners.contains(owner_of(unit))) return input_error("no guard drop-in for " + unit + " in the journal");
  auto r = tuner.release(owner_of(unit));
  if (!r) return with_context(r.error(), "removing the drop-in of " + unit);
  // The directory the drop-in needed goes too when nothing else is in it.
  std::error_code ec;
  fs::remove(paths.systemd_d / (unit + ".d"), ec);
  return {};
}

}  // namespace spark::guard
