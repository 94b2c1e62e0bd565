// The always-on memory-management probes (bpf/mm_probes.bpf.c) behind an RAII wrapper:
// open/load/attach return Result, destruction detaches and frees everything. Each probe's program
// type is chosen at load time (probe_loader.h). The on-demand deep probe is deep_probe.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "mm_events.h"
#include "telemetry/mm_snapshot.h"
#include "telemetry/probe_loader.h"

namespace spark::telemetry {

// One ring-buffer event, decoded; memcg_path resolved in user space from the memcg id.
struct MmEvent {
  mm_event raw{};
  std::string comm;
  std::string memcg_path;      // "/process_api/x/child" within the memory hierarchy; "" unknown
  std::string oom_memcg_path;  // where the limit was hit (memcg OOM)
  bool is_oom() const { return raw.type == MM_EVENT_OOM_VICTIM; }
  bool memcg_oom() const { return raw.flags & MM_EF_MEMCG_OOM; }
};

struct MmProbeOptions {
  ProbeKindPolicy kinds;
  std::chrono::nanoseconds stall_threshold{std::chrono::milliseconds(50)};
};

class MmProbes {
 public:
  MmProbes(MmProbes&&) noexcept;
  MmProbes& operator=(MmProbes&&) noexcept;
  ~MmProbes();

  // Opens the object and chooses a program type per probe (nothing in the kernel yet).
  static Result<MmProbes> open(const HostPaths& paths, const MmProbeOptions& options);
  // Loads the chosen programs (falling back per probe); then attach().
  Result<void> load();
  // Attaches every loaded program; a probe that fails to attach is reported in choices(), and
  // attach fails only when none attached.
  Result<void> attach();
  // open + load + attach.
  static Result<MmProbes> start(const HostPaths& paths, const MmProbeOptions& options);

  const std::vector<ProbeChoice>& choices() const;
  // One line per probe: "compaction_begin: tp_btf" / "extfrag: none (...)".
  std::vector<std::string> describe() const;
  size_t attached_count() const;
  // The kernel ids of the loaded programs (for BPF_ENABLE_STATS accounting).
  std::vector<uint32_t> program_ids() const;
  // Detaches every probe (loaded, maps kept); attach() attaches them again (benchmarks A/B).
  void detach();

  Result<MmSnapshot> snapshot() const;
  Result<void> set_stall_threshold(std::chrono::nanoseconds ns);
  // Delivers pending ring-buffer events (waiting up to timeout for the first); returns how many.
  Result<int> poll_events(std::chrono::milliseconds timeout, const std::function<void(const MmEvent&)>& on_event);
  // The ring buffer's epoll fd, for a daemon's own event loop.
  int event_fd() const;

 private:
  struct Impl;
  explicit MmProbes(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};
}  // namespace spark::telemetry
