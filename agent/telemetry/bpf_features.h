// Which tracepoint program types this kernel loads and runs (tp_btf, raw_tp, classic tp), found by
// loading the feature_probe skeleton and firing its tracepoint. Behind an interface so callers
// (probe selection, doctor) can be tested with a fake.
#pragma once

#include <string>

#include "core/result.h"

namespace spark::telemetry {

enum class ProbeKind { tp_btf, raw_tp, tp };
const char* probe_kind_name(ProbeKind k);
// The suffix of a program's name in the BPF objects for its kind: "_btf", "_raw", "_tp".
const char* probe_kind_suffix(ProbeKind k);

struct ProbeSupport {
  bool tp_btf = false;
  bool raw_tp = false;
  bool tp = false;
  std::string tp_btf_error;  // why a kind failed, empty when it works
  std::string raw_tp_error;
  std::string tp_error;
  bool any() const { return tp_btf || raw_tp || tp; }
};

class BpfFeatures {
 public:
  virtual ~BpfFeatures() = default;
  virtual ProbeSupport probe() = 0;
};

// The real kernel: loads each program on its own, attaches it, fires task_rename via
// prctl(PR_SET_NAME) and checks that the program counted it.
class KernelBpfFeatures : public BpfFeatures {
 public:
  ProbeSupport probe() override;
};

}  // namespace spark::telemetry
