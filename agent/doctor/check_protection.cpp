// protection: the units that must stay usable (the agent, ssh, interactive sessions) have a memory floor
// and a low OOM score in effect, not only on paper.
#include <algorithm>
#include <set>

#include "core/fs.h"
#include "daemon/protect.h"
#include "doctor/doctor.h"
#include "state/journal.h"

using spark::state::read_journal;

namespace spark::doctor {

namespace {

// The unit file, or empty: resolved through an alias symlink so ssh/sshd count once.
std::string unit_file_name(const Env& env, const std::string& unit) {
  const fs::path& root = env.paths.host_root;
  for (const fs::path& dir : {env.paths.systemd_d, root / "run/systemd/system", root / "usr/lib/systemd/system",
                              root / "lib/systemd/system"}) {
    std::error_code ec;
    fs::path p = dir / unit;
    if (!fs::exists(fs::symlink_status(p, ec))) continue;
    if (fs::is_symlink(fs::symlink_status(p, ec))) {
      auto target = fs::read_symlink(p, ec);
      if (!ec && target.filename() != "null") return target.filename().string();
      if (!ec) return "";  // masked
    }
    return unit;
  }
  return "";
}

// The unit's cgroup directory under base (two levels: system.slice/x.service, or x.slice).
fs::path find_cgroup(const fs::path& base, const std::string& unit) {
  std::error_code ec;
  if (fs::is_directory(base / unit, ec)) return base / unit;
  for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec) && fs::is_directory(it->path() / unit, ec)) return it->path() / unit;
  return {};
}

}  // namespace

std::vector<Finding> check_protection(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"protection", s, std::move(m), std::move(fix)});
  };
  const bool defaults = env.protected_units.empty();
  std::vector<std::string> units = defaults ? k_default_protected_units : env.protected_units;
  // Units `spark-tune protect` wrote a drop-in for (journal owners "protect:UNIT") are checked too.
  std::set<std::string> journaled;
  if (auto journal = read_journal(env.paths)) {
    for (const auto& owner : journal->owner_names()) {
      if (!owner.starts_with("protect:")) continue;
      std::string unit = owner.substr(8);
      journaled.insert(unit);
      if (std::find(units.begin(), units.end(), unit) == units.end()) units.push_back(unit);
    }
  } else {
    add(Status::warn, std::string("cannot read the journal of protected units: ") + journal.error().what(),
        "spark-tune status");
  }
  const fs::path& cg = env.paths.cgroup;
  // Where systemd keeps unit cgroups: the v2 tree (also in hybrid mode), else the v1 name=systemd tree.
  fs::path unit_tree = fs::exists(cg / "cgroup.controllers")           ? cg
                       : fs::exists(cg / "unified/cgroup.controllers") ? cg / "unified"
                                                                       : cg / "systemd";
  std::set<std::string> seen;
  for (const auto& arg : units) {
    auto name = protect_unit_name(arg);
    if (!name) {
      add(Status::warn, name.error().what());
      continue;
    }
    const std::string& unit = *name;
    std::string file = unit_file_name(env, unit);
    fs::path group = find_cgroup(unit_tree, unit);
    const bool protected_by_us = journaled.count(unit) > 0;
    if (file.empty() && group.empty()) {
      if (!defaults || protected_by_us)
        add(Status::warn,
            unit + ": no such unit here" + (protected_by_us ? " (spark-tune protect wrote a drop-in)" : ""),
            protected_by_us ? "check the name with systemctl list-units, or spark-tune protect --undo " + unit
                            : "check the name with systemctl list-units");
      continue;
    }
    std::string canonical = file.empty() ? unit : file;
    if (!seen.insert(canonical).second) continue;
    fs::path dropin = protect_dropin_path(env.paths, unit);
    bool has_dropin = fs::exists(dropin) || fs::exists(protect_dropin_path(env.paths, canonical));
    if (protected_by_us && !has_dropin) {
      add(Status::warn, unit + ": the journal holds a protect drop-in, but " + dropin.string() + " is gone",
          "spark-tune protect " + unit + " (or spark-tune protect --undo " + unit + " to forget it)");
      continue;
    }
    const bool slice = unit.ends_with(".slice");
    if (group.empty()) {
      if (has_dropin)
        add(Status::ok, unit + ": protected by " + dropin.string() + " (not running now)");
      else
        add(Status::warn, unit + " is not protected (not running now)", "spark-tune protect " + unit);
      continue;
    }
    // Effective state: memory.min of the unit's cgroup and oom_score_adj of its processes.
    auto min = read_value(group / "memory.min");
    bool floor_known = min.ok();
    bool floor = min && *min != "0";
    int worst_adj = -1000;
    size_t procs = 0;
    if (auto list = read_file(group / "cgroup.procs")) {
      for (const auto& pid : split_lines(*list)) {
        if (pid.empty()) continue;
        auto adj = read_value(env.paths.proc / pid / "oom_score_adj");
        if (!adj) continue;
        ++procs;
        worst_adj = std::max(worst_adj, std::atoi(adj->c_str()));
      }
    }
    bool oom_ok = slice || procs == 0 || worst_adj <= -500;
    std::string state = std::string("memory.min ") + (floor_known ? *min : "n/a (cgroup v1)") +
                        (slice ? "" : ", oom_score_adj " + (procs ? std::to_string(worst_adj) : std::string("n/a")));
    if ((floor || (!floor_known && has_dropin)) && oom_ok) {
      add(Status::ok, unit + ": " + state + (floor_known ? "" : "; MemoryMin needs cgroup v2 to take effect"));
    } else if (has_dropin) {
      add(Status::warn, unit + ": drop-in written but not in effect (" + state + ")",
          "systemctl daemon-reload && systemctl restart " + unit);
    } else {
      add(Status::fail,
          unit + " has no memory floor or OOM protection (" + state +
              "): under load pressure it is reclaimed or killed like any process",
          "spark-tune protect " + unit);
    }
  }
  if (out.empty())
    add(Status::ok, "none of the units to protect exists here (" + std::to_string(units.size()) + " checked)");
  return out;
}

}  // namespace spark::doctor
