#include "tune/tuner.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>

#include "core/log.h"

using spark::state::JournalData, spark::state::JournalTxn, spark::state::Layer, spark::state::Target,
    spark::state::TargetKind, spark::state::TargetRecord, spark::state::boot_scoped, spark::state::sysctl_target;

namespace spark::tune {

std::optional<std::string> coupled_sysctl(const std::string& key) {
  if (key == "vm.dirty_ratio") return "vm.dirty_bytes";
  if (key == "vm.dirty_bytes") return "vm.dirty_ratio";
  if (key == "vm.dirty_background_ratio") return "vm.dirty_background_bytes";
  if (key == "vm.dirty_background_bytes") return "vm.dirty_background_ratio";
  return std::nullopt;
}

namespace {

// Crash-test seam: SPARK_TUNE_TEST_STOP_AFTER_WRITES=N stops the process (SIGSTOP) right after
// its N-th kernel write of an apply, so a test can kill -9 it between the journal and the last write.
void maybe_stop_for_crash_test(size_t writes_done) {
  static const char* env = std::getenv("SPARK_TUNE_TEST_STOP_AFTER_WRITES");
  if (env && std::strtoul(env, nullptr, 10) == writes_done) std::raise(SIGSTOP);
}

std::string show(const std::optional<std::string>& v) {
  if (!v) return "(absent)";
  if (v->size() > 64 || v->find('\n') != std::string::npos) return "(" + std::to_string(v->size()) + " bytes)";
  return *v;
}

// Kernel values compare normalised ("always [madvise] never" == "madvise"); a file's text exactly
// (a drop-in's "[Service]" section must not read as the value "Service").
bool same(const Target& t, const std::optional<std::string>& a, const std::optional<std::string>& b) {
  if (!a || !b) return !a && !b;
  if (t.kind == TargetKind::file) return *a == *b;
  return normalize_value(*a) == normalize_value(*b);
}

bool is_coupled_zero(const Target& t, const std::optional<std::string>& v) {
  return t.kind == TargetKind::sysctl && coupled_sysctl(t.name) && v && normalize_value(*v) == "0";
}

// A cgroup control file whose cgroup directory is gone (a transient scope systemd collected when
// its processes exited, a box removed by hand): the kernel dropped the value with the cgroup, so
// there is nothing left to restore. Only ENOENT with the directory gone counts: a missing file in
// a cgroup that still exists (a controller not enabled) and a missing sysctl still fail.
bool cgroup_gone(const HostPaths& paths, const Target& t, const Error& e) {
  if (t.kind != TargetKind::cgroup || e.code().value() != ENOENT) return false;
  auto p = resolve_target(paths, t);
  if (!p) return false;
  std::error_code ec;
  return !fs::exists(p->parent_path(), ec) && !ec;
}

// Writes a value and reads it back. A coupled key restored to 0 is not written: its sibling's
// restore (the non-zero one of the pair) zeroes it in the kernel.
Result<void> write_verified(Actuator& act, const Target& t, const std::optional<std::string>& value) {
  if (is_coupled_zero(t, value)) return {};
  SPARK_TRY_VOID(act.write(t, value));
  SPARK_TRY(auto now, act.read(t));
  if (!same(t, now, value))
    return sys_error(EIO, "wrote " + t.display() + " = " + show(value) + " but the kernel reports " + show(now));
  return {};
}

}  // namespace

Result<std::vector<ChangeResult>> Tuner::apply(const std::string& owner, const std::vector<Change>& changes,
                                               const ApplyOptions& options) {
  SPARK_TRY(JournalTxn txn, JournalTxn::begin(paths_, &journal_cache_));
  if (txn.from_earlier_boot()) {
    SPARK_TRY(size_t dropped, forget_earlier_boot());
    (void)dropped;
    SPARK_TRY(txn, JournalTxn::begin(paths_, &journal_cache_));
  }
  // What to put back if a write fails: the journal as read (shared with the cache, not copied:
  // a begin in the soak copied the whole journal for this, issue 13).
  std::shared_ptr<const JournalData> before = txn.as_read();

  // 1. Read every current value first: a target that cannot be read fails the whole apply untouched.
  struct Step {
    Target target;
    std::optional<std::string> current;
    std::optional<std::string> value;
    std::string reason;
    bool implicit = false;  // the coupled sibling, recorded but never written
  };
  std::vector<Step> steps;
  auto add_step = [&](const Target& t, const std::optional<std::string>& v, const std::string& reason,
                      bool implicit) -> Result<void> {
    for (auto& s : steps)
      if (s.target == t) {
        if (implicit) return {};
        if (!s.implicit) return input_error(t.display() + " appears twice in one change set");
        s.value = v;
        s.implicit = false;
        s.reason = reason;
        return {};
      }
    SPARK_TRY(auto cur, act_.read(t));
    steps.push_back({t, cur, v, reason, implicit});
    return {};
  };
  for (const auto& c : changes) {
    SPARK_TRY_VOID(add_step(c.target, c.value, c.reason, false));
    if (c.target.kind == TargetKind::sysctl) {
      if (auto sib = coupled_sysctl(c.target.name); sib && c.value && normalize_value(*c.value) != "0")
        SPARK_TRY_VOID(add_step(sysctl_target(*sib), std::string("0"), "coupled to " + c.target.name, true));
    }
  }

  // 2. Journal the plan before the first write.
  JournalData& d = txn.data();
  std::vector<size_t> to_write;  // indexes into steps that are written (owner on top)
  for (size_t i = 0; i < steps.size(); ++i) {
    auto& s = steps[i];
    TargetRecord* rec = d.find(s.target);
    if (!rec) {
      d.targets.push_back({s.target, {}});
      rec = &d.targets.back();
    }
    auto mine = std::find_if(rec->layers.begin(), rec->layers.end(), [&](const Layer& l) { return l.owner == owner; });
    bool on_top;
    if (mine == rec->layers.end()) {
      rec->layers.push_back({owner, s.current, s.value, s.reason});
      on_top = true;
    } else {
      mine->value = s.value;
      mine->reason = s.reason;
      on_top = (mine + 1 == rec->layers.end());
      if (!on_top) (mine + 1)->previous = s.value;  // the layer above will restore to our new value
    }
    if (on_top && !s.implicit) to_write.push_back(i);
  }
  if (!options.owner_state.is_null()) d.owners[owner] = options.owner_state;
  SPARK_TRY_VOID(txn.commit());

  // 3. Write and read back, in order; undo in reverse on the first failure.
  std::vector<ChangeResult> results;
  std::vector<size_t> written;
  for (size_t i : to_write) {
    auto& s = steps[i];
    bool needed = !same(s.target, s.current, s.value);
    Result<void> r = needed ? write_verified(act_, s.target, s.value) : Result<void>();
    if (!r) {
      const Error& failure = r.error();  // r lives to the end of this block
      // Undo in reverse, then the coupled siblings: of each pair the non-zero original is written.
      std::vector<size_t> undo(written.rbegin(), written.rend());
      for (size_t k = 0; k < steps.size(); ++k)
        if (steps[k].implicit) undo.push_back(k);
      bool undo_failed = false;
      for (size_t k : undo) {
        auto& w = steps[k];
        if (auto u = write_verified(act_, w.target, w.current); !u) {
          undo_failed = true;
          log_error("undo of " + w.target.display() + " failed: " + describe(u.error()) +
                    "; the journal keeps it: run spark-tune revert");
        }
      }
      if (undo_failed) return failure;  // the journal still holds every original

      // The undo restored the kernel; put the journal back to what it was before this apply.
      txn.data() = *before;
      if (auto c = txn.commit(); !c) log_error("restoring the journal failed: " + describe(c.error()));
      return failure;
    }
    if (needed) {
      written.push_back(i);
      log_change(s.target.display(), show(s.current), show(s.value), owner, s.reason);
      maybe_stop_for_crash_test(written.size());
    }
    results.push_back({s.target, s.current, s.value, needed});
  }
  // Implicit siblings must read what the kernel made of them.
  for (auto& s : steps)
    if (s.implicit) {
      auto now = act_.read(s.target);
      results.push_back({s.target, s.current, now ? *now : s.value, false});
    }

  // 4. A replacing apply releases the owner's layers on targets it no longer names.
  if (options.replace) {
    std::vector<Target> stale;
    for (const auto& rec : txn.data().targets) {
      bool named = std::any_of(steps.begin(), steps.end(), [&](const Step& s) { return s.target == rec.target; });
      bool mine = std::any_of(rec.layers.begin(), rec.layers.end(), [&](const Layer& l) { return l.owner == owner; });
      if (mine && !named) stale.push_back(rec.target);
    }
    if (!stale.empty()) {
      SPARK_TRY(auto released, release_locked(txn, owner, &stale));  // commits
      results.insert(results.end(), released.begin(), released.end());
    }
  }
  // Nothing changed the journal since the commit before the writes (release_locked commits its
  // own): no second write of the same journal.
  return results;
}

Result<std::vector<ChangeResult>> Tuner::release_locked(JournalTxn& txn, const std::string& owner,
                                                        const std::vector<Target>* only) {
  JournalData& d = txn.data();
  std::vector<ChangeResult> results;
  std::vector<Error> failures;
  // Newest first: the reverse of the order the targets were changed in.
  for (auto rit = d.targets.rbegin(); rit != d.targets.rend(); ++rit) {
    auto& rec = *rit;
    if (only && std::find(only->begin(), only->end(), rec.target) == only->end()) continue;
    auto it = std::find_if(rec.layers.begin(), rec.layers.end(), [&](const Layer& l) { return l.owner == owner; });
    if (it == rec.layers.end()) continue;
    bool on_top = (it + 1 == rec.layers.end());
    if (!on_top) {
      (it + 1)->previous = it->previous;  // the layer above now restores to what was beneath us
      rec.layers.erase(it);
      results.push_back({rec.target, std::nullopt, std::nullopt, false});
      continue;
    }
    auto now = act_.read(rec.target);
    std::optional<std::string> cur = now ? *now : std::nullopt;
    bool needed = !now || !same(rec.target, cur, it->previous);
    Result<void> r = needed ? write_verified(act_, rec.target, it->previous) : Result<void>();
    if (!r && cgroup_gone(paths_, rec.target, r.error())) {
      log_change(rec.target.display(), show(it->value), "(cgroup gone)", owner,
                 "restore: the cgroup was removed with its values; nothing left to restore");
      results.push_back({rec.target, it->value, std::nullopt, false});
      rec.layers.erase(it);
      continue;
    }
    if (!r) {
      failures.push_back(r.error());
      continue;  // keep the layer: a later revert retries it
    }
    if (needed && !is_coupled_zero(rec.target, it->previous))
      log_change(rec.target.display(), show(cur), show(it->previous), owner, "restore");
    results.push_back({rec.target, cur, it->previous, needed && !is_coupled_zero(rec.target, it->previous)});
    rec.layers.erase(it);
  }
  d.targets.erase(
      std::remove_if(d.targets.begin(), d.targets.end(), [](const TargetRecord& r) { return r.layers.empty(); }),
      d.targets.end());
  if (!only) {
    bool holds = std::any_of(d.targets.begin(), d.targets.end(), [&](const TargetRecord& r) {
      return std::any_of(r.layers.begin(), r.layers.end(), [&](const Layer& l) { return l.owner == owner; });
    });
    if (!holds) d.owners.erase(owner);
  }
  SPARK_TRY_VOID(txn.commit());
  if (!failures.empty()) {
    std::string msg = "could not restore " + std::to_string(failures.size()) + " value(s): ";
    for (size_t i = 0; i < failures.size(); ++i) msg += (i ? "; " : "") + std::string(failures[i].what());
    return sys_error(failures.front().code().value(), msg + " (the journal keeps them: run spark-tune revert again)");
  }
  return results;
}

Result<std::vector<ChangeResult>> Tuner::release(const std::string& owner) {
  SPARK_TRY(JournalTxn txn, JournalTxn::begin(paths_, &journal_cache_));
  return release_locked(txn, owner, nullptr);
}

Result<std::vector<ChangeResult>> Tuner::revert_all() {
  SPARK_TRY(JournalTxn txn, JournalTxn::begin(paths_, &journal_cache_));
  std::vector<ChangeResult> all;
  if (txn.from_earlier_boot()) {
    // Kernel values are this boot's own; only persistent files are restored.
    auto& d = txn.data();
    d.targets.erase(std::remove_if(d.targets.begin(), d.targets.end(),
                                   [&](const TargetRecord& r) { return boot_scoped(paths_, r.target); }),
                    d.targets.end());
  }
  auto names = txn.data().owner_names();
  std::optional<Error> first;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    auto r = release_locked(txn, *it, nullptr);
    if (!r) {
      if (!first) first = r.error();
      continue;
    }
    all.insert(all.end(), r->begin(), r->end());
  }
  if (first) return *first;
  txn.data().owners = nlohmann::json::object();
  SPARK_TRY_VOID(txn.commit());
  return all;
}

Result<void> Tuner::set_owner_state(const std::string& owner, const nlohmann::json& state) {
  SPARK_TRY(JournalTxn txn, JournalTxn::begin(paths_, &journal_cache_));
  if (state.is_null())
    txn.data().owners.erase(owner);
  else
    txn.data().owners[owner] = state;
  return txn.commit();
}

Result<size_t> Tuner::forget_earlier_boot() {
  SPARK_TRY(JournalTxn txn, JournalTxn::begin(paths_, &journal_cache_));
  if (!txn.from_earlier_boot()) return size_t{0};
  auto& d = txn.data();
  size_t before = d.targets.size();
  d.targets.erase(std::remove_if(d.targets.begin(), d.targets.end(),
                                 [&](const TargetRecord& r) { return boot_scoped(paths_, r.target); }),
                  d.targets.end());
  size_t dropped = before - d.targets.size();
  if (dropped)
    log_warning("the journal is from an earlier boot: " + std::to_string(dropped) +
                " kernel value(s) in it are that boot's and were not restored (this boot started with its own)");
  SPARK_TRY_VOID(txn.commit());
  return dropped;
}

}  // namespace spark::tune
