#include "doctor/doctor.h"

#include <algorithm>

namespace spark::doctor {

const char* status_name(Status s) {
  switch (s) {
    case Status::ok:
      return "OK";
    case Status::warn:
      return "WARN";
    case Status::fail:
      return "FAIL";
  }
  return "?";
}

const std::vector<Check>& checks() {
  static const std::vector<Check> list = {
      {"sysctl", "memory reserve and sysctls; who overrides them", check_sysctl},
      {"protection", "units that must stay usable have memory floors and OOM protection", check_protection},
      {"bpf", "BTF, which probe types load, privileges", check_bpf},
      {"cgroup", "cgroup version, memory controller, memory.reclaim", check_cgroup},
      {"swap", "swap / zram and pinned memory", check_swap},
      {"thp", "transparent hugepage mode", check_thp},
      {"gpu", "driver answers, per-device memory, servers without GGML_CUDA_NO_PINNED=1", check_gpu},
      {"persist", "what survives a reboot", check_persist},
      {"systemd", "systemd as PID 1, spark-tune.socket installed and enabled; what does not work without",
       check_systemd},
      {"floor", "what wakes a window's floor: memory PSI trigger, reclaim tracepoints (which kind)", check_floor},
  };
  return list;
}

uint64_t recommended_min_free_kbytes(uint64_t mem_total_bytes) {
  uint64_t kb = mem_total_bytes / 64 / 1024;
  return std::clamp<uint64_t>(kb, 128 * 1024, 1024 * 1024);
}

Result<std::vector<Finding>> run_checks(const Env& env, const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (std::none_of(checks().begin(), checks().end(), [&](const Check& c) { return n == c.name; })) {
      std::string known;
      for (const auto& c : checks()) known += (known.empty() ? "" : ", ") + std::string(c.name);
      return input_error("unknown check '" + n + "'; the checks are: " + known);
    }
  std::vector<Finding> out;
  for (const auto& c : checks()) {
    if (!names.empty() && std::find(names.begin(), names.end(), c.name) == names.end()) continue;
    auto f = c.run(env);
    out.insert(out.end(), f.begin(), f.end());
  }
  return out;
}

bool any_fail(const std::vector<Finding>& findings) {
  return std::any_of(findings.begin(), findings.end(), [](const Finding& f) { return f.status == Status::fail; });
}

}  // namespace spark::doctor
