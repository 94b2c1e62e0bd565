#include "profile/profile_ops.h"

#include <algorithm>
#include <ctime>

#include "core/fs.h"

using spark::state::JournalData, spark::state::Layer, spark::state::Target, spark::state::TargetKind,
    spark::state::read_journal;

using spark::tune::Actuator, spark::tune::ApplyOptions, spark::tune::Change, spark::tune::ChangeResult,
    spark::tune::Tuner, spark::tune::normalize_value;

namespace spark::profile {

Result<ResolvedProfile> resolve_named_profile(const HostPaths& paths, const std::string& name, Actuator& act) {
  ProfileStore store(paths);
  SPARK_TRY(auto chain, store.load_chain(name));
  SPARK_TRY(MemInfo host, read_meminfo(paths));
  return resolve_profile(chain, host, act);
}

namespace {

std::string persist_tmpfiles_text(const ResolvedProfile& p) {
  std::string text = "# Written by `spark-tune apply " + p.name + " --persist`; `spark-tune revert` removes it.\n";
  for (const auto& s : p.settings)
    if (s.target.kind == TargetKind::sysfs) text += "w /sys/" + s.target.name + " - - - - " + s.value + "\n";
  return text;
}

}  // namespace

Result<ApplyOutcome> apply_profile(const HostPaths& paths, Actuator& act, const ApplyRequest& req) {
  ApplyOutcome out;
  SPARK_TRY(out.resolved, resolve_named_profile(paths, req.profile, act));
  SPARK_TRY(MemInfo host, read_meminfo(paths));
  out.guardrails = guardrail_violations(out.resolved, host, act);
  if (!out.guardrails.empty() && !req.force && !req.dry_run) {
    std::string msg = "profile " + out.resolved.name + " refused, nothing changed:";
    for (const auto& g : out.guardrails) msg += "\n  - " + g;
    return sys_error(EPERM, msg + "\n(apply with --force if you really mean it)");
  }
  std::vector<Change> changes = profile_changes(out.resolved);
  if (req.persist) {
    std::vector<std::pair<std::string, std::string>> values;
    std::vector<std::string> keys;
    bool sysfs = false;
    for (const auto& s : out.resolved.settings) {
      if (s.target.kind == TargetKind::sysctl) {
        values.emplace_back(s.key, s.value);
        keys.push_back(s.key);
      } else {
        sysfs = true;
      }
    }
    fs::path dropin = paths.sysctl_d / k_persist_file_name;
    changes.push_back(
        {Target{TargetKind::file, dropin.string()}, persist_dropin_text(out.resolved.name, values), "persist"});
    out.persisted.push_back(dropin.string());
    if (sysfs) {
      fs::path tmpfiles = paths.host_root / "etc/tmpfiles.d/spark-tune.conf";
      changes.push_back({Target{TargetKind::file, tmpfiles.string()}, persist_tmpfiles_text(out.resolved), "persist"});
      out.persisted.push_back(tmpfiles.string());
    }
    for (auto& src : sysctl_sources(paths, keys))
      if (src.file_name.empty() || src.file_name > k_persist_file_name) out.boot_overrides.push_back(src);
  }
  if (req.dry_run) return out;
  ApplyOptions opts;
  opts.replace = true;
  opts.owner_state = {{"name", out.resolved.name},
                      {"chain", out.resolved.chain},
                      {"options", out.resolved.options},  // preflight/window defaults of the applied profile
                      {"persist", req.persist},
                      {"forced", req.force && !out.guardrails.empty()},
                      {"applied_at", static_cast<int64_t>(std::time(nullptr))}};
  Tuner tuner(paths, act);
  auto r = tuner.apply(k_profile_owner, changes, opts);
  if (!r) return with_context(r.error(), "applying " + out.resolved.name + " (every value written was put back)");
  out.results = std::move(*r);
  return out;
}

bool VerifyOutcome::drift() const {
  return std::any_of(rows.begin(), rows.end(), [](const VerifyRow& r) { return r.status == "drift"; });
}

Result<VerifyOutcome> verify_profile(const HostPaths& paths, Actuator& act, const std::optional<std::string>& name) {
  VerifyOutcome out;
  std::vector<std::string> drifted;
  if (name) {
    SPARK_TRY(auto resolved, resolve_named_profile(paths, *name, act));
    out.profile = resolved.name;
    for (const auto& s : resolved.settings) {
      bool ok = s.action != "set";
      out.rows.push_back({s.key, s.value, s.current, ok ? "ok" : "drift", {}});
      if (!ok) drifted.push_back(s.key);
    }
  } else {
    SPARK_TRY(JournalData j, read_journal(paths));
    if (!j.owners.contains(k_profile_owner))
      return sys_error(ENOENT,
                       "no profile is applied: run `spark-tune apply NAME`, or `spark-tune verify NAME` to check one");
    out.profile = j.owners[k_profile_owner].value("name", "?");
    for (const auto& rec : j.targets) {
      auto it =
          std::find_if(rec.layers.begin(), rec.layers.end(), [](const Layer& l) { return l.owner == k_profile_owner; });
      if (it == rec.layers.end() || rec.target.kind == TargetKind::file) continue;
      // Coupled siblings recorded for restore are not settings of the profile.
      if (it->reason.rfind("coupled to ", 0) == 0) continue;
      SPARK_TRY(auto cur, act.read(rec.target));
      std::string actual = cur.value_or("(absent)");
      std::string expected = it->value.value_or("(absent)");
      std::string key = key_name_for(rec.target);
      std::string status;
      if (it + 1 != rec.layers.end())
        status = "held by " + rec.layers.back().owner;
      else
        status = normalize_value(actual) == normalize_value(expected) ? "ok" : "drift";
      out.rows.push_back({key, expected, actual, status, {}});
      if (status == "drift") drifted.push_back(key);
    }
  }
  if (!drifted.empty()) {
    for (const auto& src : sysctl_sources(paths, drifted))
      for (auto& row : out.rows)
        if (row.key == src.key && row.status == "drift") row.set_by.push_back(src.source + " sets " + src.value);
  }
  return out;
}

nlohmann::json to_json(const ResolvedProfile& p) {
  nlohmann::json settings = nlohmann::json::array();
  for (const auto& s : p.settings)
    settings.push_back({{"key", s.key},
                        {"raw", s.raw},
                        {"value", s.value},
                        {"current", s.current},
                        {"action", s.action},
                        {"source", s.source}});
  return {{"name", p.name}, {"chain", p.chain}, {"settings", settings}, {"options", p.options}};
}

nlohmann::json to_json(const VerifyOutcome& v) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : v.rows)
    rows.push_back(
        {{"key", r.key}, {"expected", r.expected}, {"actual", r.actual}, {"status", r.status}, {"set_by", r.set_by}});
  return {{"profile", v.profile}, {"drift", v.drift()}, {"keys", rows}};
}

}  // namespace spark::profile

namespace spark::tune {

nlohmann::json to_json(const ChangeResult& c) {
  auto opt = [](const std::optional<std::string>& s) { return s ? nlohmann::json(*s) : nlohmann::json(); };
  return {{"target", c.target.display()}, {"before", opt(c.before)}, {"after", opt(c.after)}, {"written", c.written}};
}

}  // namespace spark::tune
