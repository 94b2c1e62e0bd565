// The one interface through which spark-tune reads and writes host state. The Tuner (tuner.h)
// journals before it calls write(); triggers (tune/trigger.h) log before they call trigger();
// nothing else writes a kernel or cgroup file.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "state/target.h"

namespace spark::tune {

class Actuator {
 public:
  virtual ~Actuator() = default;
  // The current value, normalised for comparison (whitespace collapsed, "[madvise]" -> "madvise").
  // nullopt: the file or directory is absent (file and dir targets only).
  virtual Result<std::optional<std::string>> read(const state::Target& t) = 0;
  // nullopt removes a file/dir target.
  virtual Result<void> write(const state::Target& t, const std::optional<std::string>& value) = 0;
  // A write that asks the kernel to do something now and has no old value to restore
  // (vm.drop_caches, vm.compact_memory, cgroup.procs, cgroup.kill, cgroup.event_control): not
  // journaled, not read back. The kernel's errno comes back (ESRCH for a process gone, ...).
  virtual Result<void> trigger(const state::Target& t, const std::string& value) = 0;
};

// Resolves a target to its path under HostPaths, refusing names that escape their tree
// (.., absolute names, symlinks that lead out of /proc/sys, /sys or the cgroup root).
Result<fs::path> resolve_target(const HostPaths& paths, const state::Target& t);

// Normalises what the kernel prints: "always [madvise] never" -> "madvise", runs of blanks -> one.
std::string normalize_value(const std::string& raw);

class HostActuator : public Actuator {
 public:
  explicit HostActuator(HostPaths paths) : paths_(std::move(paths)) {}
  Result<std::optional<std::string>> read(const state::Target& t) override;
  Result<void> write(const state::Target& t, const std::optional<std::string>& value) override;
  Result<void> trigger(const state::Target& t, const std::string& value) override;

 private:
  HostPaths paths_;
};

// A dry run: reads go to the inner actuator, writes and triggers are recorded in order and never
// made. planned() is what a real run would have written.
class DryRunActuator : public Actuator {
 public:
  struct Planned {
    state::Target target;
    std::optional<std::string> value;  // nullopt: remove (file/dir targets)
    bool trigger = false;
    std::string text() const;  // "vm.drop_caches = 3 (trigger)"
  };
  explicit DryRunActuator(Actuator& inner) : inner_(inner) {}
  Result<std::optional<std::string>> read(const state::Target& t) override { return inner_.read(t); }
  Result<void> write(const state::Target& t, const std::optional<std::string>& value) override;
  Result<void> trigger(const state::Target& t, const std::string& value) override;
  const std::vector<Planned>& planned() const { return planned_; }

 private:
  Actuator& inner_;
  std::vector<Planned> planned_;
};

}  // namespace spark::tune
