// gpu: the driver answers, per-device memory, and model servers that run with pinned host memory.
#include <algorithm>
#include <set>

#include "core/fs.h"
#include "core/units.h"
#include "doctor/doctor.h"
#include "gpu/gpu_probe.h"
#include "guard/supervisor.h"
#include "telemetry/memory_holders.h"

using spark::telemetry::process_ids, spark::telemetry::process_name;

using spark::gpu::GpuProbe, spark::gpu::nvml_library_path;

namespace spark::doctor {

namespace {

// llama.cpp-family servers use pinned host buffers unless GGML_CUDA_NO_PINNED=1.
bool is_ggml_server(const std::string& comm, const std::string& exe) {
  static const std::set<std::string> k_names = {"llama-server", "llama-cli",       "llama-bench", "rpc-server",
                                                "ollama",       "ollama_llama_se", "koboldcpp",   "llama-mtmd-cli"};
  std::string base = exe.substr(exe.rfind('/') + 1);
  return k_names.count(comm) || k_names.count(base) || base.rfind("llama-", 0) == 0;
}

std::string unit_of(const HostPaths& paths, const std::string& pid) {
  auto text = read_file(paths.proc / pid / "cgroup");
  if (!text) return "";
  for (const auto& line : split_lines(*text)) {
    auto slash = line.rfind('/');
    if (slash == std::string::npos) continue;
    std::string leaf = line.substr(slash + 1);
    if (leaf.ends_with(".service")) return leaf;
  }
  return "";
}

}  // namespace

std::vector<Finding> check_gpu(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"gpu", s, std::move(m), std::move(fix)});
  };
  GpuProbe probe(env.nvml_library.empty() ? nvml_library_path() : env.nvml_library);
  auto sample = probe.sample({}, std::chrono::steady_clock::now() + env.gpu_timeout, false);
  if (!sample) {
    int err = sample.error().code().value();
    if (err == ENOENT) {
      add(Status::ok, "no NVIDIA driver (CPU-only host): nothing to check");
      return out;
    }
    if (err == ETIMEDOUT)
      add(Status::fail, "the NVIDIA driver did not answer within " + format_duration(env.gpu_timeout),
          "check nvidia-smi and dmesg | grep -i nvrm; a wedged driver needs a GPU reset (nvidia-smi -r) or a reboot");
    else
      add(Status::fail, std::string("NVML: ") + sample.error().what(),
          "check the driver is loaded (lsmod | grep nvidia) and nvidia-smi answers");
  } else {
    if (sample->devices.empty()) add(Status::warn, "the NVIDIA driver answers but sees no device", "nvidia-smi -L");
    for (const auto& d : sample->devices)
      add(Status::ok, "GPU " + std::to_string(d.index) + " " + d.name + ": " +
                          (d.unified ? "unified memory (accounted against host RAM)"
                                     : format_size(d.free) + " free of " + format_size(d.total)));
    // Issue 14 part 3: on unified memory a server's cgroup does not see what it allocates on the GPU.
    bool unified = std::any_of(sample->devices.begin(), sample->devices.end(), [](const auto& d) { return d.unified; });
    if (unified)
      if (auto guards = guard::list_guards(env.paths); guards)
        for (const auto& g : *guards)
          if (!g.host_floor)
            add(Status::warn,
                "guard " + g.id + " (pid " + std::to_string(g.pid) +
                    ") holds a memory cgroup budget only: on this unified-memory host the cgroup does not see what "
                    "the server allocates on the GPU, so the budget cannot protect the host",
                "spark-tune guard end " + g.id +
                    ", then guard the server again with a host floor (--host-floor 5%, "
                    "the default here unless --host-floor off was given)");
  }
  // Servers launched without GGML_CUDA_NO_PINNED=1, from their environment.
  for (int id : process_ids(env.paths)) {
    std::string pid = std::to_string(id);
    std::string comm = process_name(env.paths, id);
    std::string cmdline = read_file(env.paths.proc / pid / "cmdline").value_or("");
    std::string exe = cmdline.substr(0, cmdline.find('\0'));
    if (!is_ggml_server(comm, exe)) continue;
    std::string who = "pid " + pid + " (" + comm + ")";
    auto environ_text = read_file(env.paths.proc / pid / "environ");
    if (!environ_text) {
      add(Status::warn, "cannot read the environment of " + who + ": " + environ_text.error().what(),
          "run spark-tune doctor gpu as root");
      continue;
    }
    bool no_pinned = false;
    size_t start = 0;
    while (start < environ_text->size()) {
      size_t e = environ_text->find('\0', start);
      if (e == std::string::npos) e = environ_text->size();
      if (environ_text->compare(start, e - start, "GGML_CUDA_NO_PINNED=1") == 0) no_pinned = true;
      start = e + 1;
    }
    if (no_pinned) continue;
    std::string unit = unit_of(env.paths, pid);
    add(Status::warn,
        who +
            " runs without GGML_CUDA_NO_PINNED=1: its pinned host buffers cannot be reclaimed or swapped and can hang "
            "a fragmented host",
        unit.empty()
            ? "export GGML_CUDA_NO_PINNED=1 before starting it, then restart it"
            : "systemctl edit " + unit + " -> [Service] Environment=GGML_CUDA_NO_PINNED=1; systemctl restart " + unit);
  }
  return out;
}

}  // namespace spark::doctor
