// The change journal: for every target spark-tune changed, a stack of layers (who changed it, from
// what, to what). The bottom layer's `previous` is the host's original value. It is written
// atomically (temp file, rename; fsync'd when it holds a value that outlives a reboot, see commit)
// under a root-only state directory before any kernel write, so a crash at any point leaves what
// `revert` or the next agent start needs to restore exactly.
//
// Layers make overlapping owners exact: a window on top of a profile restores the profile's value;
// two windows on one key restore the original only when the last one ends, in either order.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/fs.h"
#include "core/host_paths.h"
#include "core/result.h"
#include "state/target.h"

namespace spark::state {

struct Layer {
  std::string owner;                    // "profile", "window:w3", "guard:g1"
  std::optional<std::string> previous;  // value before this layer; nullopt = absent (file/dir)
  std::optional<std::string> value;     // value this layer set; nullopt = removed
  std::string reason;
};

struct TargetRecord {
  Target target;
  std::vector<Layer> layers;  // bottom (oldest) first
};

struct JournalData {
  std::string boot_id;
  std::vector<TargetRecord> targets;                 // in order of first change
  nlohmann::json owners = nlohmann::json::object();  // per-owner state (profile name, window TTL, ...)

  TargetRecord* find(const Target& t);
  const TargetRecord* find(const Target& t) const;
  bool empty() const { return targets.empty() && owners.empty(); }
  // Owners that hold at least one layer or have state, in first-seen order.
  std::vector<std::string> owner_names() const;
};

// Kernel state is the boot's own and gone after a reboot; files on disk (sysctl.d and systemd
// drop-ins) and directories outside the cgroup tree (a drop-in's .d directory) survive it.
bool boot_scoped(const HostPaths& paths, const Target& t);

nlohmann::json to_json(const JournalData& d);
Result<JournalData> journal_from_json(const nlohmann::json& j);

// The journal as this process last read or wrote it: the file's exact bytes and what they parse
// to. A read through it costs a read of the file and a compare; the parse happens only when
// another process changed the file (a CLI apply or revert beside the agent). The agent's Tuner
// keeps one, so a window.list and each window's begin and end no longer parse the whole journal
// (issue 13: `status` p99 in bench/agent_soak).
struct JournalCache {
  std::string text;
  std::shared_ptr<const JournalData> data;
};

// A locked view of the journal: construct, read/modify data(), commit(). The lock (flock on
// <state>/lock) serialises every spark-tune process that changes the host.
class JournalTxn {
 public:
  // With a cache: read through it, and commit() leaves the new journal in it.
  static Result<JournalTxn> begin(const HostPaths& paths, JournalCache* cache = nullptr);
  JournalData& data() { return data_; }
  const JournalData& data() const { return data_; }
  // The journal as it was read at begin (shared with the cache: no copy where there is one).
  std::shared_ptr<const JournalData> as_read() const {
    return read_ ? read_ : std::make_shared<const JournalData>(data_);
  }
  // Writes the journal (or removes it when empty) atomically with mode 0600. Durable (fsync'd)
  // while it holds, or held at begin, a value that outlives a reboot (a file, a drop-in): one that
  // holds only this boot's kernel values (sysctls, sysfs, cgroups: every window, every guard) is
  // renamed into place without fsync -- a crash of the agent keeps it (the page cache), and a power
  // loss takes those values with it, so nothing is left to restore. The agent's loop then never
  // waits for the disk on a window's begin or end (issue 13: status p99).
  Result<void> commit();
  // True when the journal on disk came from an earlier boot (its kernel values are gone).
  bool from_earlier_boot() const { return earlier_boot_; }
  const std::string& current_boot_id() const { return boot_id_; }

 private:
  JournalTxn(HostPaths paths, FileLock lock) : paths_(std::move(paths)), lock_(std::move(lock)) {}
  HostPaths paths_;
  FileLock lock_;
  JournalData data_;
  std::string boot_id_;
  bool earlier_boot_ = false;
  bool held_persistent_ = false;  // the journal read at begin held a value that outlives a reboot
  JournalCache* cache_ = nullptr;
  std::shared_ptr<const JournalData> read_;  // what begin read through the cache
};

// Read-only snapshot without taking the lock (status, verify).
Result<JournalData> read_journal(const HostPaths& paths);
// The same through a cache (see JournalCache): parsed only when the file's bytes changed.
Result<std::shared_ptr<const JournalData>> read_journal(const HostPaths& paths, JournalCache& cache);
// The state directory, created 0700 if missing, refused if a symlink or writable by others.
Result<void> ensure_state_dir(const HostPaths& paths);

}  // namespace spark::state
