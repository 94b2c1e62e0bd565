// Per-probe program-type selection for a BPF object whose programs are named <probe>_btf
// (tp_btf), <probe>_raw (raw_tp) and <probe>_tp (classic tracepoint): for each probe, the first
// allowed kind that this kernel offers is loaded, and only that one. If the object as a whole
// does not load, each probe is tried on its own, so one refused program costs one signal only.
#pragma once

#include <bpf/libbpf.h>

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "telemetry/bpf_features.h"

namespace spark::telemetry {

// Which program types may be used (a test or --probe-kinds forces tp_btf off, for instance) and
// which probes are switched off entirely.
struct ProbeKindPolicy {
  bool tp_btf = true;
  bool raw_tp = true;
  bool tp = true;
  std::set<std::string> disabled;
  bool allows(ProbeKind k) const;
  // "raw_tp,tp" -> only those kinds; error names the unknown kind.
  static Result<ProbeKindPolicy> parse(const std::string& kinds);
};

struct ProbeChoice {
  std::string probe;              // "compaction_begin"
  std::string tracepoint;         // "mm_compaction_begin"
  std::string category;           // "compaction" (from the classic tp section)
  std::optional<ProbeKind> kind;  // none: this signal is lost
  std::string error;              // why an earlier kind was refused, or why none works
  bool attached = false;
};

// Kernel facts the selection depends on, behind an interface for tests.
class TracepointCatalog {
 public:
  virtual ~TracepointCatalog() = default;
  // tp_btf/raw_tp: the kernel's BTF has btf_trace_<name>.
  virtual bool has_btf_tracepoint(const std::string& name) const = 0;
  // classic tp: tracefs has events/<category>/<name>/id.
  virtual bool has_tracefs_event(const std::string& category, const std::string& name) const = 0;
};

class KernelTracepointCatalog : public TracepointCatalog {
 public:
  explicit KernelTracepointCatalog(const HostPaths& paths);
  ~KernelTracepointCatalog() override;
  bool has_btf_tracepoint(const std::string& name) const override;
  bool has_tracefs_event(const std::string& category, const std::string& name) const override;
  bool has_btf() const { return btf_ != nullptr; }

 private:
  HostPaths paths_;
  struct btf* btf_ = nullptr;
};

// The probes of an opened object and the first kind of each that policy and catalog allow.
std::vector<ProbeChoice> choose_probe_kinds(bpf_object* obj, const ProbeKindPolicy& policy,
                                            const TracepointCatalog& catalog);
// The next allowed kind after the current one (for a probe whose kind failed to load).
std::optional<ProbeKind> next_probe_kind(const ProbeChoice& c, const ProbeKindPolicy& policy,
                                         const TracepointCatalog& catalog);
// Autoload exactly the chosen program of each probe (none for the others).
void apply_probe_choices(bpf_object* obj, const std::vector<ProbeChoice>& choices);
bpf_program* chosen_program(bpf_object* obj, const ProbeChoice& c);

// Loads an object through `try_load`, which opens a fresh copy, applies the given choices and
// loads it (returning the errno on failure). On a failure, each probe is tried alone and moved
// down the kinds until one loads; probes with no loadable kind are dropped. Returns the final
// choices with which try_load succeeded.
using TryLoad = std::function<Result<void>(const std::vector<ProbeChoice>& choices)>;
Result<std::vector<ProbeChoice>> load_with_fallback(std::vector<ProbeChoice> choices, const ProbeKindPolicy& policy,
                                                    const TracepointCatalog& catalog, const TryLoad& try_load);

}  // namespace spark::telemetry
