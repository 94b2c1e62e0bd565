// floor: what wakes a window's floor (issue 14 part 2) on this host besides its 10 ms check: a
// memory PSI trigger, and the reclaim tracepoints of bpf/floor_wake.bpf.c (which program kind).
#include "core/fs.h"
#include "doctor/doctor.h"
#include "telemetry/psi.h"
#include "telemetry/reclaim_wake.h"

using spark::telemetry::PsiKind, spark::telemetry::PsiTrigger, spark::telemetry::ReclaimWake,
    spark::telemetry::memory_pressure_file;

namespace spark::doctor {

namespace {

// The real kernel: the trigger the floor creates (window/floor.cpp), and the tracepoints loaded
// and attached once, then closed.
class KernelFloorWake : public FloorWakeProbe {
 public:
  explicit KernelFloorWake(const HostPaths& paths) : paths_(paths) {}
  Result<std::string> psi() override {
    const auto file = memory_pressure_file(paths_);
    auto t =
        PsiTrigger::create(file, PsiKind::some, std::chrono::microseconds(5000), std::chrono::microseconds(500000));
    if (t) return std::string("some 5 ms in 500 ms on " + file.string());
    auto t2 =
        PsiTrigger::create(file, PsiKind::some, std::chrono::microseconds(5000), std::chrono::microseconds(2000000));
    if (t2)
      return std::string("some 5 ms in 2 s on " + file.string() + " (a 500 ms window refused: " + describe(t.error()) +
                         ")");
    return t.error();
  }
  Result<std::string> reclaim() override {
    SPARK_TRY(auto w, ReclaimWake::open(paths_));
    return w->name();
  }

 private:
  const HostPaths& paths_;
};

}  // namespace

std::vector<Finding> floor_wake_findings(const Result<std::string>& psi, const Result<std::string>& reclaim) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"floor", s, std::move(m), std::move(fix)});
  };
  if (psi)
    add(Status::ok, "a floor is woken by a memory PSI trigger: " + *psi);
  else
    add(Status::warn,
        "no memory PSI trigger (" + describe(psi.error()) + "): a floor notices memory stalls only at its 10 ms check",
        "boot a kernel with CONFIG_PSI=y and without psi=0 on its command line (add psi=1 where "
        "CONFIG_PSI_DEFAULT_DISABLED=y)");
  if (reclaim)
    add(Status::ok, "a floor is woken when the kernel starts reclaiming: " + *reclaim);
  else
    add(Status::warn,
        "the floor's reclaim tracepoints do not load (" + describe(reclaim.error()) +
            "): kswapd waking and direct reclaim do not wake a floor; it keeps its timer" +
            (psi ? " and PSI trigger" : ""),
        "run the agent as root on a kernel with BPF (CONFIG_BPF_SYSCALL=y) and the vmscan tracepoints; `spark-tune "
        "doctor bpf` says which probe kinds load");
  return out;
}

std::vector<Finding> check_floor(const Env& env) {
  KernelFloorWake kernel(env.paths);
  FloorWakeProbe& probe = env.floor_wake ? *env.floor_wake : kernel;
  return floor_wake_findings(probe.psi(), probe.reclaim());
}

}  // namespace spark::doctor
