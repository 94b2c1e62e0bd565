// The preflight decision: go, refused (with every reason and who holds the memory) or undecided.
// Host RAM rule and fragmentation from telemetry/host_fit, per-GPU fit (each device on its own,
// never the sum) with the optional settle wait from gpu/gpu_probe.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/meminfo.h"
#include "gpu/gpu_probe.h"
#include "telemetry/host_fit.h"
#include "telemetry/memory_holders.h"
#include "telemetry/reserve.h"
#include "tune/actuator.h"

namespace spark::gpu {

struct PreflightRequest {
  uint64_t bytes = 0;  // the model's size
  double factor = telemetry::k_default_factor;
  uint64_t headroom = telemetry::k_default_headroom;
  std::string limits_from = "built-in defaults";  // where factor/headroom came from: flags, a profile
  std::vector<unsigned> gpus;                     // devices the model is pinned to
  uint64_t gpu_bytes = 0;                         // what each of them must hold
  bool settle = false;
  bool settle_force = false;  // wait even without a kill signal (the caller knows it just killed a holder)
  std::chrono::milliseconds settle_max{2000};
  std::chrono::milliseconds settle_interval{100};
  std::chrono::milliseconds probe_timeout{5000};  // without --settle
  bool compact = false;
  telemetry::FragPolicy frag;
  uint64_t page_size = 0;  // 0: this host's
  std::string nvml_library = nvml_library_path();
  size_t holders = 5;
  // What the load-window overlay will take from MemAvailable (issue 14 part 4): when set, the host RAM
  // rule is judged against MemAvailable under the overlay, as the engine's own start-up check will see it.
  std::optional<telemetry::OverlayReserve> overlay;
};

enum class Verdict { go, refused, undecided };
const char* verdict_name(Verdict v);

// A device as NVML reported it (free: host MemAvailable for a unified device), with what it must hold.
struct GpuFit : GpuMemory {
  uint64_t need = 0;
  bool fits = false;
};

struct PreflightReport {
  PreflightRequest request;  // what was asked, echoed in the JSON
  Verdict verdict = Verdict::go;
  std::vector<std::string> refusals;
  std::vector<std::string> warnings;
  std::vector<std::string> notes;
  std::string undecided;  // why no decision could be made
  MemInfo host;
  telemetry::RamFit ram;
  std::vector<telemetry::NodeFrag> frag;
  std::vector<telemetry::NodeFrag> frag_before_compact;  // set when compaction ran
  bool compacted = false;
  bool gpu_checked = false;
  std::vector<GpuFit> gpus;
  std::optional<SettleOutcome> settle;
  KillSignal kill;
  std::chrono::microseconds probe_time{0};
  std::vector<telemetry::MemoryHolder> processes;  // on refusal
  std::vector<telemetry::MemoryHolder> cgroups;
  std::vector<telemetry::MemoryHolder> gpu_holders;

  nlohmann::json to_json() const;
  std::string to_text() const;
};

// Compaction (request.compact) is a trigger through the actuator; the first form uses the host's.
PreflightReport run_preflight(const HostPaths& paths, const PreflightRequest& request);
PreflightReport run_preflight(const HostPaths& paths, const PreflightRequest& request, tune::Actuator& act);

}  // namespace spark::gpu
