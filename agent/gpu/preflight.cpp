#include "gpu/preflight.h"

#include <unistd.h>

#include <algorithm>
#include <iomanip>
#include <sstream>

#include "core/units.h"
#include "tune/trigger.h"

using spark::tune::Actuator, spark::tune::HostActuator, spark::tune::compact_memory;

using spark::telemetry::MemoryHolder, spark::telemetry::NodeFrag, spark::telemetry::Severity,
    spark::telemetry::judge_fragmentation, spark::telemetry::largest_cgroups, spark::telemetry::largest_processes,
    spark::telemetry::process_name, spark::telemetry::ram_fit, spark::telemetry::read_node_buddy,
    spark::telemetry::severity_name, spark::telemetry::worst;

namespace spark::gpu {

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::go:
      return "go";
    case Verdict::refused:
      return "refused";
    case Verdict::undecided:
      return "undecided";
  }
  return "?";
}

namespace {

using Ms = std::chrono::milliseconds;

std::string factor_text(double f) {
  std::ostringstream s;
  s << f;
  return s.str();
}

void check_gpus(const HostPaths& paths, const PreflightRequest& req, PreflightReport& rep) {
  using Clock = std::chrono::steady_clock;
  GpuProbe probe(req.nvml_library);
  const auto start = Clock::now();
  const auto first_deadline = start + (req.settle ? req.settle_max : req.probe_timeout);
  auto first = probe.sample(req.gpus, first_deadline, true);
  if (!first) {
    int err = first.error().code().value();
    if (err == ENOENT) {
      rep.notes.push_back(std::string(first.error().what()) + ": GPU check skipped (CPU-only host)");
      return;
    }
    rep.undecided = std::string("GPU check: ") + first.error().what();
    if (err == ETIMEDOUT) rep.undecided += " (the NVIDIA driver may be wedged; check nvidia-smi and dmesg)";
    return;
  }
  rep.probe_time = first->took;
  GpuSample sample = std::move(*first);
  if (req.settle) {
    rep.kill = recent_gpu_kill(paths, sample.processes);
    if (req.settle_force && !rep.kill.recent) {
      rep.kill.recent = true;
      rep.kill.why = "asked to (--settle-force)";
    }
    bool any_dedicated = false;
    for (const auto& d : sample.devices) any_dedicated |= !d.unified;
    if (rep.kill.recent && any_dedicated) {
      auto outcome = settle_wait(paths, probe, req.gpus, std::move(sample), start, req.settle_max, req.settle_interval);
      sample = outcome.last;
      if (!outcome.settled) rep.warnings.push_back(outcome.note);
      rep.settle = std::move(outcome);
    } else {
      SettleOutcome none;
      none.last = sample;
      none.elapsed = std::chrono::duration_cast<Ms>(Clock::now() - start);
      none.note = any_dedicated ? "no GPU holder was killed recently: no wait" : "unified memory: nothing to settle";
      rep.settle = std::move(none);
    }
  }
  rep.gpu_checked = true;
  uint64_t unified_need = 0;
  for (const auto& d : sample.devices) {
    GpuFit f;
    static_cast<GpuMemory&>(f) = d;
    f.need = req.gpu_bytes;
    if (d.unified) {
      unified_need += req.gpu_bytes;
      f.free = rep.host.available();
      f.fits = true;  // judged with host RAM below
      rep.notes.push_back("GPU " + std::to_string(d.index) + " (" + d.name +
                          ") has unified memory: its need is accounted against host RAM");
    } else {
      f.fits = d.free >= req.gpu_bytes;
      if (!f.fits)
        rep.refusals.push_back("GPU " + std::to_string(d.index) + " (" + d.name + "): needs " +
                               format_size(req.gpu_bytes) + ", has " + format_size(d.free) + " free of " +
                               format_size(d.total) + ": " + format_size(req.gpu_bytes - d.free) +
                               " missing on this device (free memory on other devices does not count)");
    }
    rep.gpus.push_back(f);
  }
  // Unified devices allocate from the same RAM as the model's host copy: the larger need counts, not the sum.
  if (unified_need && unified_need + req.headroom > rep.ram.need) {
    rep.ram.need = unified_need + req.headroom;
    rep.ram.fits = rep.ram.available >= rep.ram.need;
  }
  for (const auto& p : sample.processes) {
    std::string name = process_name(paths, p.pid);
    rep.gpu_holders.push_back({"pid " + std::to_string(p.pid) + " (" + (name.empty() ? "exited" : name) + ") on GPU " +
                                   std::to_string(p.index),
                               p.used});
  }
  std::sort(rep.gpu_holders.begin(), rep.gpu_holders.end(), [](auto& a, auto& b) { return a.bytes > b.bytes; });
  if (rep.gpu_holders.size() > req.holders) rep.gpu_holders.resize(req.holders);
}

}  // namespace

PreflightReport run_preflight(const HostPaths& paths, const PreflightRequest& req) {
  HostActuator act(paths);
  return run_preflight(paths, req, act);
}

PreflightReport run_preflight(const HostPaths& paths, const PreflightRequest& req, Actuator& act) {
  PreflightReport rep;
  rep.request = req;
  auto host = read_meminfo(paths);
  if (!host) {
    rep.verdict = Verdict::undecided;
    rep.undecided = host.error().what();
    return rep;
  }
  rep.host = *host;
  rep.ram = ram_fit(req.bytes, req.factor, req.headroom,
                    rep.host.available() - (req.overlay ? std::min(req.overlay->takes(), rep.host.available()) : 0));
  if (req.overlay && req.overlay->takes())
    rep.notes.push_back("the load-window overlay takes " + format_size(req.overlay->takes()) +
                        " from MemAvailable: judged against " + format_size(rep.ram.available) +
                        " (begin the window with --no-overlay, or a smaller vm.min_free_kbytes, to keep it)");

  // Fragmentation, per node; compaction on request when a node is not ok.
  uint64_t page_size = req.page_size ? req.page_size : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  auto buddy = read_node_buddy(paths);
  if (!buddy) {
    rep.warnings.push_back(std::string("fragmentation not checked: ") + buddy.error().what());
  } else {
    rep.frag = judge_fragmentation(*buddy, page_size, req.frag);
    if (req.compact && worst(rep.frag) != Severity::ok) {
      auto c = compact_memory(act, "preflight", "free memory not in large blocks");
      if (!c) {
        rep.warnings.push_back(std::string(c.error().what()) + " (compaction needs root)");
      } else if (auto again = read_node_buddy(paths); again) {
        rep.compacted = true;
        rep.frag_before_compact = std::move(rep.frag);
        rep.frag = judge_fragmentation(*again, page_size, req.frag);
      }
    }
    for (const auto& n : rep.frag) {
      if (n.severity == Severity::refuse)
        rep.refusals.push_back("fragmentation: " + n.reason +
                               (req.compact ? " (even after compaction)" : "; try --compact"));
      else if (n.severity == Severity::warn)
        rep.warnings.push_back("fragmentation: " + n.reason);
    }
  }

  if (!req.gpus.empty())
    check_gpus(paths, req, rep);
  else if (req.settle)
    rep.notes.push_back("--settle applies to the devices given with --gpu: nothing to settle");
  if (!rep.undecided.empty()) {
    rep.verdict = Verdict::undecided;
    return rep;
  }

  if (!rep.ram.fits) {
    std::ostringstream s;
    s << "host RAM: needs " << format_size(rep.ram.need) << " (" << format_size(req.bytes) << " x "
      << factor_text(req.factor) << " + " << format_size(req.headroom) << " headroom), MemAvailable is "
      << format_size(rep.ram.available) << ": " << format_size(rep.ram.missing())
      << " missing; stop or shrink a holder below";
    if (req.factor > 0.9)
      s << ", or use --factor 0.9 if the server runs without pinned host memory (GGML_CUDA_NO_PINNED=1)";
    rep.refusals.insert(rep.refusals.begin(), s.str());
  }
  if (!rep.refusals.empty()) {
    rep.verdict = Verdict::refused;
    rep.processes = largest_processes(paths, req.holders);
    rep.cgroups = largest_cgroups(paths, req.holders);
  }
  return rep;
}

nlohmann::json PreflightReport::to_json() const {
  using nlohmann::json;
  auto holders = [](const std::vector<MemoryHolder>& v) {
    json a = json::array();
    for (const auto& h : v) a.push_back({{"name", h.name}, {"bytes", h.bytes}});
    return a;
  };
  auto nodes = [](const std::vector<NodeFrag>& v) {
    json a = json::array();
    for (const auto& n : v)
      a.push_back({{"node", n.node},
                   {"free_bytes", n.free_bytes},
                   {"large_bytes", n.large_bytes},
                   {"large_share", n.large_share},
                   {"unusable_index", n.unusable_index},
                   {"fragmentation_index", n.fragmentation_index},
                   {"severity", severity_name(n.severity)}});
    return a;
  };
  json j = {{"verdict", verdict_name(verdict)},
            {"refusals", refusals},
            {"warnings", warnings},
            {"notes", notes},
            {"host",
             {{"total", host.total()},
              {"available", host.available()},
              {"need", ram.need},
              {"fits", ram.fits},
              {"missing", ram.missing()}}},
            {"fragmentation", nodes(frag)},
            {"compacted", compacted},
            {"request",
             {{"bytes", request.bytes},
              {"factor", request.factor},
              {"headroom", request.headroom},
              {"limits_from", request.limits_from},
              {"gpus", request.gpus},
              {"gpu_bytes", request.gpu_bytes},
              {"settle", request.settle},
              {"settle_max_ms", request.settle_max.count()}}}};
  if (!undecided.empty()) j["undecided"] = undecided;
  if (request.overlay) j["overlay"] = request.overlay->to_json();
  if (compacted) j["fragmentation_before_compact"] = nodes(frag_before_compact);
  if (gpu_checked) {
    json g = json::array();
    for (const auto& f : gpus)
      g.push_back({{"index", f.index},
                   {"name", f.name},
                   {"unified", f.unified},
                   {"need", f.need},
                   {"free", f.free},
                   {"total", f.total},
                   {"fits", f.fits}});
    j["gpus"] = g;
    j["probe_us"] = probe_time.count();
  }
  if (settle)
    j["settle"] = {{"waited", settle->waited},   {"settled", settle->settled},
                   {"samples", settle->samples}, {"elapsed_ms", settle->elapsed.count()},
                   {"signal", kill.why},         {"note", settle->note}};
  if (verdict == Verdict::refused)
    j["holders"] = {{"processes", holders(processes)}, {"cgroups", holders(cgroups)}, {"gpu", holders(gpu_holders)}};
  return j;
}

std::string PreflightReport::to_text() const {
  std::ostringstream o;
  o << "preflight: " << verdict_name(verdict) << '\n';
  if (!undecided.empty()) o << "  could not decide: " << undecided << '\n';
  o << "  host RAM: need " << format_size(ram.need) << ", available " << format_size(ram.available) << " (factor "
    << factor_text(request.factor) << ", headroom " << format_size(request.headroom) << ": " << request.limits_from
    << ")\n";
  if (request.overlay) o << "  " << request.overlay->to_text() << '\n';
  for (const auto& n : frag)
    o << "  node " << n.node << ": " << format_size(n.free_bytes) << " free in the buddy allocator, "
      << static_cast<int>(n.large_share * 100) << "% in large blocks (" << severity_name(n.severity) << ")"
      << (compacted ? " after compaction" : "") << '\n';
  for (const auto& g : gpus)
    o << "  GPU " << g.index << " (" << g.name << "): need " << format_size(g.need) << ", free " << format_size(g.free)
      << (g.unified ? " (unified: host RAM)" : "") << (g.fits ? "" : "  REFUSED") << '\n';
  if (settle)
    o << "  settle: " << (settle->waited ? (settle->settled ? "settled" : "not settled") : "no wait") << " after "
      << settle->elapsed.count() << " ms, " << settle->samples << " sample(s)"
      << (kill.why.empty() ? "" : " (" + kill.why + ")") << '\n';
  for (const auto& r : refusals) o << "  refused: " << r << '\n';
  for (const auto& w : warnings) o << "  warning: " << w << '\n';
  for (const auto& n : notes) o << "  note: " << n << '\n';
  auto list = [&](const char* title, const std::vector<MemoryHolder>& v) {
    if (v.empty()) return;
    o << "  largest " << title << ":\n";
    for (const auto& h : v) o << "    " << std::setw(10) << format_size(h.bytes) << "  " << h.name << '\n';
  };
  list("processes", processes);
  list("cgroups", cgroups);
  list("GPU holders", gpu_holders);
  return o.str();
}

}  // namespace spark::gpu
