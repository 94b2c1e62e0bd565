// Deep mode (bpf/mm_deep.bpf.c), on demand for a bounded period, behind an RAII wrapper like
// MmProbes: the kmem:mm_page_alloc order histogram and the top allocating tasks.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "mm_events.h"
#include "telemetry/probe_loader.h"

namespace spark::telemetry {

// Deep mode: kmem:mm_page_alloc order histogram and top allocating tasks, for a bounded period.
struct AllocTask {
  uint32_t tgid = 0;
  std::string comm;
  uint64_t calls = 0;
  uint64_t pages = 0;
};
struct DeepReport {
  std::array<uint64_t, MM_ORDERS> orders{};
  std::vector<AllocTask> top;  // by pages, largest first
  std::string kind;            // program type used
  double seconds = 0;
};

class DeepProbe {
 public:
  DeepProbe(DeepProbe&&) noexcept;
  DeepProbe& operator=(DeepProbe&&) noexcept;
  ~DeepProbe();  // detaches
  static Result<DeepProbe> start(const HostPaths& paths, const ProbeKindPolicy& kinds);
  Result<DeepReport> read(size_t top_n) const;
  void stop();            // detach now (the maps stay readable)
  Result<void> resume();  // attach again after stop(); the counts go on
  bool attached() const;
  // The kernel ids of the loaded programs (they stay loaded, detached, until destruction).
  std::vector<uint32_t> program_ids() const;

 private:
  struct Impl;
  explicit DeepProbe(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Attach deep mode for `period`, then detach and report.
Result<DeepReport> run_deep(const HostPaths& paths, const ProbeKindPolicy& kinds, std::chrono::milliseconds period,
                            size_t top_n = 10);

}  // namespace spark::telemetry
