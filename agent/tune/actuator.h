// The one interface through which spark-tune reads and writes host state. The Tuner (tuner.h)
// journals before it calls write(); nothing else writes kernel settings.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/host_paths.h"
#include "core/result.h"
#include "state/target.h"

namespace spark {

class Actuator {
 public:
  virtual ~Actuator() = default;
  // The current value, normalised for comparison (whitespace collapsed, "[madvise]" -> "madvise").
  // nullopt: the file or directory is absent (file and dir targets only).
  virtual Result<std::optional<std::string>> read(const Target& t) = 0;
  // nullopt removes a file/dir target.
  virtual Result<void> write(const Target& t, const std::optional<std::string>& value) = 0;
};

// Resolves a target to its path under HostPaths, refusing names that escape their tree
// (.., absolute names, symlinks that lead out of /proc/sys, /sys or the cgroup root).
Result<fs::path> resolve_target(const HostPaths& paths, const Target& t);

// Normalises what the kernel prints: "always [madvise] never" -> "madvise", runs of blanks -> one.
std::string normalize_value(const std::string& raw);

class HostActuator : public Actuator {
 public:
  explicit HostActuator(HostPaths paths) : paths_(std::move(paths)) {}
  Result<std::optional<std::string>> read(const Target& t) override;
  Result<void> write(const Target& t, const std::optional<std::string>& value) override;

 private:
  HostPaths paths_;
};

// Test seam: a HostActuator whose write fails with the given errno for one target.
class FailingActuator : public Actuator {
 public:
  FailingActuator(Actuator& inner, Target fail_on, int err) : inner_(inner), fail_on_(std::move(fail_on)), err_(err) {}
  Result<std::optional<std::string>> read(const Target& t) override { return inner_.read(t); }
  Result<void> write(const Target& t, const std::optional<std::string>& value) override;

 private:
  Actuator& inner_;
  Target fail_on_;
  int err_;
};

}  // namespace spark
