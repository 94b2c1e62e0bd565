// The always-on memory-management probes (bpf/mm_probes.bpf.c) and the on-demand deep probe
// (bpf/mm_deep.bpf.c) behind RAII wrappers: open/load/attach return Result, destruction detaches
// and frees everything. Each probe's program type is chosen at load time (probe_loader.h).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "mm_events.h"
#include "telemetry/probe_loader.h"

namespace spark {

// A log2 latency histogram summed over CPUs.
struct LatencyHistogram {
  std::array<uint64_t, MM_HIST_SLOTS> slots{};
  uint64_t count = 0;
  uint64_t sum_ns = 0;
  uint64_t max_ns = 0;
  // Upper bound of the slot that holds the p-th quantile (0 < p <= 1); 0 when empty.
  uint64_t quantile_ns(double p) const;
  double mean_ns() const { return count ? static_cast<double>(sum_ns) / static_cast<double>(count) : 0; }
  LatencyHistogram minus(const LatencyHistogram& earlier) const;
};

// Cumulative since the probes were attached.
struct MmCounters {
  std::array<uint64_t, MM_COUNTERS> raw{};
  uint64_t operator[](mm_counter c) const { return raw[c]; }
  uint64_t at(int index) const { return index >= 0 && index < MM_COUNTERS ? raw[index] : 0; }
  MmCounters minus(const MmCounters& earlier) const;
};

struct MmSnapshot {
  MmCounters counters;
  std::array<LatencyHistogram, MM_HIST_KINDS> hists;
  MmSnapshot minus(const MmSnapshot& earlier) const;
};

const char* hist_kind_name(mm_hist_kind k);   // "direct_reclaim", "memcg_reclaim", ...
const char* compact_result_name(int status);  // "success", "skipped", ...

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

// Finds a cgroup directory by its inode (= kernfs id) under the memory hierarchy (v1) or the
// unified one (v2); results are cached.
class CgroupResolver {
 public:
  explicit CgroupResolver(const HostPaths& paths) : paths_(paths) {}
  std::string path_of(uint64_t id);

 private:
  HostPaths paths_;
  std::vector<std::pair<uint64_t, std::string>> cache_;
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
  void stop();  // detach now (the maps stay readable)
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

}  // namespace spark
