#include "telemetry/bpf_features.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>

#include "events.h"
#include "feature_probe.skel.h"
#include "telemetry/bpf_skeleton.h"

namespace spark::telemetry {

const char* probe_kind_name(ProbeKind k) {
  switch (k) {
    case ProbeKind::tp_btf:
      return "tp_btf";
    case ProbeKind::raw_tp:
      return "raw_tp";
    case ProbeKind::tp:
      return "tp";
  }
  return "?";
}

const char* probe_kind_suffix(ProbeKind k) {
  switch (k) {
    case ProbeKind::tp_btf:
      return "_btf";
    case ProbeKind::raw_tp:
      return "_raw";
    case ProbeKind::tp:
      return "_tp";
  }
  return "";
}

namespace {

using FeatureProbeSkeleton =
    BpfSkeleton<feature_probe, feature_probe__open, feature_probe__load, feature_probe__destroy>;

// Loads only the program of one kind, attaches it, fires the tracepoint and reads its counter.
Result<void> try_kind(ProbeKind kind) {
  const int idx = static_cast<int>(kind);
  auto only_this_kind = [idx](feature_probe& s) {
    s.rodata->target_tgid = static_cast<__u32>(::getpid());
    bpf_program* all[] = {s.progs.probe_tp_btf, s.progs.probe_raw_tp, s.progs.probe_tp};
    for (int i = 0; i < 3; ++i) bpf_program__set_autoload(all[i], i == idx);
  };
  SPARK_TRY(auto skel, FeatureProbeSkeleton::try_load(std::string(probe_kind_name(kind)) + " program", only_this_kind));
  bpf_program* progs[] = {skel->progs.probe_tp_btf, skel->progs.probe_raw_tp, skel->progs.probe_tp};
  bpf_link* link = bpf_program__attach(progs[idx]);
  if (!link) return errno_error("attaching " + std::string(probe_kind_name(kind)) + " program");
  char old_name[17] = {};
  ::prctl(PR_GET_NAME, old_name);
  ::prctl(PR_SET_NAME, "spark-probe");
  ::prctl(PR_SET_NAME, old_name);
  bpf_link__destroy(link);
  __u32 key = static_cast<__u32>(idx);
  __u64 hits = 0;
  if (bpf_map__lookup_elem(skel->maps.hits, &key, sizeof key, &hits, sizeof hits, 0) != 0)
    return errno_error("reading feature_probe counter");
  if (hits == 0) return sys_error(ENOENT, std::string(probe_kind_name(kind)) + " program attached but never ran");
  return {};
}

}  // namespace

ProbeSupport KernelBpfFeatures::probe() {
  ProbeSupport s;
  auto run = [](ProbeKind k, bool& ok, std::string& why) {
    auto r = try_kind(k);
    ok = r.ok();
    if (!ok) why = r.error().what();
  };
  run(ProbeKind::tp_btf, s.tp_btf, s.tp_btf_error);
  run(ProbeKind::raw_tp, s.raw_tp, s.raw_tp_error);
  run(ProbeKind::tp, s.tp, s.tp_error);
  return s;
}

}  // namespace spark::telemetry
