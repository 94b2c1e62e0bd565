// cgroup and bpf: what the kernel offers the guard and the probes.
#include <sys/capability.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/memory_cgroup.h"
#include "doctor/doctor.h"

using spark::telemetry::BpfFeatures, spark::telemetry::KernelBpfFeatures, spark::telemetry::ProbeSupport;

namespace spark::doctor {

std::vector<Finding> check_cgroup(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"cgroup", s, std::move(m), std::move(fix)});
  };
  const auto& cg = env.paths.cgroup;
  const std::string v2_fix =
      "add systemd.unified_cgroup_hierarchy=1 to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub, reboot";
  auto h = find_memory_hierarchy(env.paths);
  if (!h) {
    if (fs::exists(cg / "cgroup.controllers"))
      add(Status::fail, "cgroup v2 without the memory controller: no memory floors, budgets or reclaim",
          "remove cgroup_disable=memory from the kernel command line (/etc/default/grub), update-grub, reboot");
    else
      add(Status::fail, "no memory cgroup controller mounted under " + cg.string(), v2_fix);
    return out;
  }
  if (h->version == CgroupVersion::v2) {
    bool reclaim = fs::exists(h->root / "memory.reclaim");
    std::error_code ec;
    for (fs::directory_iterator it(h->root, ec), end; !reclaim && !ec && it != end; it.increment(ec))
      reclaim = fs::exists(it->path() / "memory.reclaim");
    if (reclaim)
      add(Status::ok, "cgroup v2 with the memory controller and memory.reclaim");
    else
      add(Status::warn,
          "cgroup v2 without memory.reclaim (kernel older than 5.19): no proactive reclaim of a server's cgroup",
          "upgrade to a kernel >= 5.19");
    return out;
  }
  add(Status::warn,
      std::string("cgroup v1 memory controller") +
          (h->hybrid ? " (hybrid: cgroup2 at unified/ has no memory controller)" : "") +
          ": MemoryMin/MemoryLow floors and memory.reclaim need cgroup v2; guards fall back to v1 limits",
      v2_fix);
  return out;
}

std::vector<Finding> check_bpf(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"bpf", s, std::move(m), std::move(fix)});
  };
  bool btf = fs::exists(env.paths.sys / "kernel/btf/vmlinux");
  if (!btf)
    add(Status::warn,
        "no BTF (" + (env.paths.sys / "kernel/btf/vmlinux").string() +
            "): CO-RE probes cannot load; the agent falls back to procfs",
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (distribution kernels have it)");
  bool privileged = ::geteuid() == 0;
  if (!privileged) {
    cap_t caps = cap_get_proc();
    if (caps) {
      cap_flag_value_t bpf = CAP_CLEAR, perfmon = CAP_CLEAR;
      cap_get_flag(caps, CAP_BPF, CAP_EFFECTIVE, &bpf);
      cap_get_flag(caps, CAP_PERFMON, CAP_EFFECTIVE, &perfmon);
      privileged = bpf == CAP_SET && perfmon == CAP_SET;
      cap_free(caps);
    }
  }
  if (!privileged && !env.bpf) {
    add(Status::warn, "not root and no CAP_BPF + CAP_PERFMON: probes cannot load from this process",
        "run the agent as root (its unit does), or run doctor with sudo");
    return out;
  }
  KernelBpfFeatures kernel;
  BpfFeatures& features = env.bpf ? *env.bpf : kernel;
  ProbeSupport s = features.probe();
  std::string loads;
  if (s.tp_btf) loads += " tp_btf";
  if (s.raw_tp) loads += " raw_tp";
  if (s.tp) loads += " tp";
  if (s.tp_btf || s.raw_tp)
    add(Status::ok, "probes load and run:" + loads + (s.tp ? "" : " (classic tp: " + s.tp_error + ")"));
  else if (s.tp)
    add(Status::warn, "only classic tracepoints load (tp_btf: " + s.tp_btf_error + "; raw_tp: " + s.raw_tp_error + ")",
        "use a kernel with BTF and raw tracepoints (>= 5.5)");
  else
    add(Status::warn,
        "no probe type loads (tp_btf: " + s.tp_btf_error + "; raw_tp: " + s.raw_tp_error +
            "): the agent falls back to procfs",
        "check dmesg for BPF verifier errors and that the kernel has CONFIG_BPF_SYSCALL=y");
  return out;
}

}  // namespace spark::doctor
