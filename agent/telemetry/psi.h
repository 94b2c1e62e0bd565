// Pressure stall information: /proc/pressure/memory (or a cgroup's memory.pressure) averages and
// totals, and PSI triggers — a threshold written to the file, woken by poll(POLLPRI) when the
// kernel sees that much stall in the window, without sampling.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "core/fd.h"
#include "core/host_paths.h"
#include "core/result.h"

namespace spark::telemetry {

struct PsiLine {
  double avg10 = 0, avg60 = 0, avg300 = 0;  // percent of wall time
  uint64_t total_us = 0;                    // cumulative stall time
};
struct Psi {
  PsiLine some;
  std::optional<PsiLine> full;  // absent for cpu on old kernels
};

Result<Psi> parse_psi(const std::string& text);
Result<Psi> read_psi(const std::filesystem::path& file);
inline std::filesystem::path memory_pressure_file(const HostPaths& paths) { return paths.proc / "pressure/memory"; }

enum class PsiKind { some, full };

// One PSI trigger: "some|full <stall us> <window us>" written to an open pressure file. The kernel
// keeps the trigger as long as the fd stays open; destroying the object closes it.
class PsiTrigger {
 public:
  PsiTrigger() = default;

  // stall: how much stall in the window fires it; window: 500ms..10s (kernel limits; unprivileged
  // users need a multiple of 2 s).
  static Result<PsiTrigger> create(const std::filesystem::path& pressure_file, PsiKind kind,
                                   std::chrono::microseconds stall, std::chrono::microseconds window);
  // Waits up to timeout: true when the trigger fired, false on timeout.
  Result<bool> wait(std::chrono::milliseconds timeout) const;
  int fd() const { return fd_.get(); }
  // Hands the fd (and with it the trigger) to the caller.
  int release() { return fd_.release(); }

 private:
  explicit PsiTrigger(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

}  // namespace spark::telemetry
