// Transactions over the Actuator and the journal. Every change is journaled (JournalTxn) before it is
// written, read back after, and undone in reverse order when any step fails. Owners ("profile",
// "window:w3", "guard:g1") stack layers on a target; releasing an owner restores exactly what was
// beneath it (see state/journal.h).
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "state/journal.h"
#include "tune/actuator.h"

namespace spark::tune {

struct Change {
  state::Target target;
  std::optional<std::string> value;  // nullopt removes (file/dir targets)
  std::string reason;
};

struct ChangeResult {
  state::Target target;
  std::optional<std::string> before;
  std::optional<std::string> after;
  bool written = false;  // false when already at the value, or when a layer above holds the target
};

struct ApplyOptions {
  // The owner's layers on targets not in this change set are released (a profile replacing a profile).
  bool replace = false;
  // Per-owner state kept in the journal (window deadline, watched pid, profile name...); null = keep.
  nlohmann::json owner_state = nullptr;
};

class Tuner {
 public:
  Tuner(HostPaths paths, Actuator& actuator) : paths_(std::move(paths)), act_(actuator) {}

  Result<std::vector<ChangeResult>> apply(const std::string& owner, const std::vector<Change>& changes,
                                          const ApplyOptions& options = {});
  // Restores what the owner's layers covered (only where it is on top) and forgets the owner.
  Result<std::vector<ChangeResult>> release(const std::string& owner);
  // Releases every owner, newest first: the host returns to the values before spark-tune.
  Result<std::vector<ChangeResult>> revert_all();
  // Replaces an owner's state in the journal (no kernel change).
  Result<void> set_owner_state(const std::string& owner, const nlohmann::json& state);
  // After a reboot the kernel values in the journal are the old boot's: drop those layers, keep
  // the file layers (sysctl.d and systemd drop-ins survive reboots) and directories outside the
  // cgroup tree (a drop-in's .d directory). Returns how many were dropped.
  Result<size_t> forget_earlier_boot();

  // The journal as it is now, parsed only when its bytes changed since this Tuner last read or
  // wrote it (state/journal.h, JournalCache): the agent's views (window.list) read it per request.
  Result<std::shared_ptr<const state::JournalData>> journal() const {
    return state::read_journal(paths_, journal_cache_);
  }

  Actuator& actuator() { return act_; }
  const HostPaths& paths() const { return paths_; }

 private:
  Result<std::vector<ChangeResult>> release_locked(state::JournalTxn& txn, const std::string& owner,
                                                   const std::vector<state::Target>* only);
  HostPaths paths_;
  Actuator& act_;
  mutable state::JournalCache journal_cache_;  // every transaction of this Tuner reads and commits through it
};

// vm.dirty_ratio and vm.dirty_bytes (and the background pair) are one setting: writing one zeroes
// the other, and 0 cannot be written back to a *_bytes key. Returns the sibling, if any.
std::optional<std::string> coupled_sysctl(const std::string& key);

}  // namespace spark::tune
