#include "daemon/protect.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "core/fs.h"
#include "core/log.h"
#include "core/systemd_unit.h"
#include "core/units.h"
#include "state/journal.h"
#include "tune/tuner.h"

using spark::state::JournalData, spark::state::Target, spark::state::TargetKind, spark::state::TargetRecord,
    spark::state::read_journal;

using spark::tune::Actuator, spark::tune::ApplyOptions, spark::tune::Change, spark::tune::ChangeResult,
    spark::tune::Tuner;

namespace spark {

namespace {

std::string systemd_size(uint64_t bytes) {
  if (bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + "G";
  if (bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + "M";
  return std::to_string(bytes);
}

}  // namespace

Result<std::string> protect_unit_name(const std::string& arg) {
  return normalize_unit_name(arg, {".service", ".slice"}, "protect");
}

fs::path protect_dropin_path(const HostPaths& paths, const std::string& unit) {
  return paths.systemd_d / (unit + ".d") / k_protect_dropin;
}

std::string protect_owner(const std::string& unit) { return "protect:" + unit; }

std::string protect_dropin_text(const std::string& unit, const ProtectSpec& spec) {
  bool slice = unit.ends_with(".slice");
  std::string t = std::string(k_protect_marker) + "; spark-tune protect --undo " + unit + " removes it.\n";
  t += slice ? "[Slice]\n" : "[Service]\n";
  t += "MemoryMin=" + systemd_size(spec.memory_min) + "\n";
  t += "MemoryLow=" + systemd_size(spec.memory_low) + "\n";
  if (!slice) t += "OOMScoreAdjust=" + std::to_string(spec.oom_score_adjust) + "\n";
  t += "ManagedOOMPreference=avoid\n";
  return t;
}

Result<void> verify_dropin(const std::string& unit, const std::string& text) {
  std::string stub = "[Unit]\nDescription=spark-tune protect check\n";
  if (!unit.ends_with(".slice")) stub += "[Service]\nExecStart=/bin/true\n";
  return spark::verify_dropin(unit, stub, k_protect_dropin, text);
}

namespace {

Target dropin_target(const fs::path& path) { return Target{TargetKind::file, path.string()}; }

// The .d directory first: it is created before the file and, on release (newest first), removed
// after it -- only when protect created it, since an existing directory is recorded as present.
std::vector<Change> dropin_changes(const std::string& unit, const fs::path& path,
                                   const std::optional<std::string>& text) {
  return {{Target{TargetKind::dir, path.parent_path().string()}, std::string(), "drop-in directory of " + unit},
          {dropin_target(path), text, "keep " + unit + " usable under memory pressure"}};
}

// The drop-in text the owner's journal layer holds, if the owner has one.
std::optional<std::optional<std::string>> journaled_dropin(const JournalData& j, const std::string& owner,
                                                           const fs::path& path) {
  if (const TargetRecord* rec = j.find(dropin_target(path)))
    for (const auto& l : rec->layers)
      if (l.owner == owner) return l.value;
  return std::nullopt;
}

bool any_written(const std::vector<ChangeResult>& results) {
  return std::any_of(results.begin(), results.end(), [](const ChangeResult& c) { return c.written; });
}

nlohmann::json owner_state(const std::string& unit, const ProtectSpec& spec) {
  return {{"unit", unit},
          {"memory_min", spec.memory_min},
          {"memory_low", spec.memory_low},
          {"oom_score_adjust", spec.oom_score_adjust}};
}

}  // namespace

Result<std::vector<ProtectChange>> protect_units(const HostPaths& paths, Actuator& act,
                                                 const std::vector<std::string>& units, const ProtectSpec& spec) {
  struct Plan {
    std::string unit;
    fs::path path;
    std::string text;
    std::optional<std::optional<std::string>> journaled;  // the owner's earlier drop-in, when it has one
    nlohmann::json earlier_state;
  };
  SPARK_TRY(JournalData journal, read_journal(paths));
  std::error_code ec;
  if (!fs::is_directory(paths.systemd_d, ec))
    return sys_error(ENOENT, paths.systemd_d.string() +
                                 " does not exist: protect writes systemd drop-ins, and this "
                                 "host has no systemd unit directory");
  std::vector<Plan> plans;
  for (const auto& arg : units) {
    SPARK_TRY(std::string unit, protect_unit_name(arg));
    if (std::any_of(plans.begin(), plans.end(), [&](const Plan& p) { return p.unit == unit; })) continue;
    fs::path path = protect_dropin_path(paths, unit);
    SPARK_TRY(auto current, act.read(dropin_target(path)));
    if (current && current->rfind(k_protect_marker, 0) != 0)
      return input_error(path.string() + " exists and was not written by spark-tune; move it away first");
    std::string owner = protect_owner(unit);
    plans.push_back({unit, path, protect_dropin_text(unit, spec), journaled_dropin(journal, owner, path),
                     journal.owners.contains(owner) ? journal.owners[owner] : nlohmann::json()});
  }
  for (const auto& p : plans) SPARK_TRY_VOID(verify_dropin(p.unit, p.text));

  Tuner tuner(paths, act);
  std::vector<ProtectChange> done;
  for (size_t i = 0; i < plans.size(); ++i) {
    const auto& p = plans[i];
    ApplyOptions opts;
    opts.owner_state = owner_state(p.unit, spec);
    auto r = tuner.apply(protect_owner(p.unit), dropin_changes(p.unit, p.path, p.text), opts);
    if (!r) {
      for (size_t k = i; k-- > 0;) {  // put back the units this call changed, newest first
        const auto& q = plans[k];
        std::string owner = protect_owner(q.unit);
        Result<void> back;
        if (!q.journaled) {
          auto rel = tuner.release(owner);
          if (!rel) back = rel.error();
        } else {
          ApplyOptions earlier;
          earlier.owner_state = q.earlier_state;
          auto re = tuner.apply(owner, dropin_changes(q.unit, q.path, *q.journaled), earlier);
          if (!re) back = re.error();
        }
        if (!back)
          log_error("putting back the drop-in of " + q.unit + " failed: " + describe(back.error()) +
                    "; the journal keeps it: run spark-tune protect --undo " + q.unit);
      }
      return with_context(r.error(), "protecting " + p.unit + (i ? " (the units before it were put back)" : ""));
    }
    done.push_back({p.unit, p.path, any_written(*r)});
  }
  return done;
}

Result<std::vector<ProtectChange>> unprotect_units(const HostPaths& paths, Actuator& act,
                                                   const std::vector<std::string>& units) {
  SPARK_TRY(JournalData journal, read_journal(paths));
  struct Plan {
    std::string unit;
    fs::path path;
    bool journaled;
  };
  std::vector<Plan> plans;
  for (const auto& arg : units) {
    SPARK_TRY(std::string unit, protect_unit_name(arg));
    fs::path path = protect_dropin_path(paths, unit);
    std::string owner = protect_owner(unit);
    bool journaled = journal.owners.contains(owner) || journaled_dropin(journal, owner, path).has_value();
    SPARK_TRY(auto current, act.read(dropin_target(path)));
    if (current && current->rfind(k_protect_marker, 0) != 0)
      return input_error(path.string() + " was not written by spark-tune; not removing it");
    if (current && !journaled)
      return input_error(path.string() + " was written by spark-tune protect but the journal in " +
                         paths.state.string() + " does not hold it (another --state-dir?); remove it by hand: rm " +
                         path.string());
    plans.push_back({unit, path, journaled});
  }
  Tuner tuner(paths, act);
  std::vector<ProtectChange> out;
  for (const auto& p : plans) {
    if (!p.journaled) {
      out.push_back({p.unit, p.path, false});
      continue;
    }
    SPARK_TRY(auto r, tuner.release(protect_owner(p.unit)));
    out.push_back({p.unit, p.path, any_written(r)});
  }
  return out;
}

}  // namespace spark
