#include "telemetry/probe_loader.h"

#include <bpf/btf.h>

#include <filesystem>
#include <map>

#include "core/fs.h"

namespace spark::telemetry {

bool ProbeKindPolicy::allows(ProbeKind k) const {
  switch (k) {
    case ProbeKind::tp_btf:
      return tp_btf;
    case ProbeKind::raw_tp:
      return raw_tp;
    case ProbeKind::tp:
      return tp;
  }
  return false;
}

Result<ProbeKindPolicy> ProbeKindPolicy::parse(const std::string& kinds) {
  ProbeKindPolicy p;
  p.tp_btf = p.raw_tp = p.tp = false;
  std::string item;
  std::string text = kinds + ",";
  for (char ch : text) {
    if (ch != ',') {
      item += ch;
      continue;
    }
    item = trim(item);
    if (item == "tp_btf")
      p.tp_btf = true;
    else if (item == "raw_tp")
      p.raw_tp = true;
    else if (item == "tp")
      p.tp = true;
    else if (!item.empty())
      return input_error("unknown probe kind \"" + item + "\": use tp_btf, raw_tp and/or tp");
    item.clear();
  }
  if (!p.tp_btf && !p.raw_tp && !p.tp) return input_error("no probe kind given: use tp_btf, raw_tp and/or tp");
  return p;
}

KernelTracepointCatalog::KernelTracepointCatalog(const HostPaths& paths) : paths_(paths) {
  btf_ = btf__load_vmlinux_btf();
  if (libbpf_get_error(btf_)) btf_ = nullptr;
}

KernelTracepointCatalog::~KernelTracepointCatalog() {
  if (btf_) btf__free(btf_);
}

bool KernelTracepointCatalog::has_btf_tracepoint(const std::string& name) const {
  return btf_ && btf__find_by_name_kind(btf_, ("btf_trace_" + name).c_str(), BTF_KIND_TYPEDEF) > 0;
}

bool KernelTracepointCatalog::has_tracefs_event(const std::string& category, const std::string& name) const {
  std::error_code ec;
  for (const auto& base : {paths_.tracefs, paths_.debugfs / "tracing"})
    if (std::filesystem::exists(base / "events" / category / name / "id", ec)) return true;
  return false;
}

namespace {

bool kind_available(const ProbeChoice& c, ProbeKind k, const TracepointCatalog& catalog) {
  if (k == ProbeKind::tp) return !c.category.empty() && catalog.has_tracefs_event(c.category, c.tracepoint);
  return catalog.has_btf_tracepoint(c.tracepoint);
}

std::optional<ProbeKind> first_kind_from(const ProbeChoice& c, int start, const ProbeKindPolicy& policy,
                                         const TracepointCatalog& catalog, std::string* why) {
  for (int i = start; i < 3; ++i) {
    auto k = static_cast<ProbeKind>(i);
    if (!policy.allows(k)) continue;
    if (!kind_available(c, k, catalog)) {
      if (why) {
        if (!why->empty()) *why += "; ";
        *why += std::string(probe_kind_name(k)) +
                (k == ProbeKind::tp ? ": no tracefs event (tracefs not mounted?)" : ": tracepoint not in kernel BTF");
      }
      continue;
    }
    return k;
  }
  return std::nullopt;
}

}  // namespace

std::vector<ProbeChoice> choose_probe_kinds(bpf_object* obj, const ProbeKindPolicy& policy,
                                            const TracepointCatalog& catalog) {
  std::map<std::string, ProbeChoice> by_probe;
  std::vector<std::string> order;
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    std::string name = bpf_program__name(prog);
    std::string section = bpf_program__section_name(prog);
    std::string probe;
    for (auto k : {ProbeKind::tp_btf, ProbeKind::raw_tp, ProbeKind::tp}) {
      std::string sfx = probe_kind_suffix(k);
      if (name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
        probe = name.substr(0, name.size() - sfx.size());
        break;
      }
    }
    if (probe.empty()) continue;
    if (!by_probe.count(probe)) order.push_back(probe);
    ProbeChoice& c = by_probe[probe];
    c.probe = probe;
    // "tp_btf/NAME", "raw_tp/NAME", "tp/CATEGORY/NAME"
    auto slash = section.find('/');
    auto last = section.rfind('/');
    c.tracepoint = section.substr(last + 1);
    if (section.rfind("tp/", 0) == 0 && last != slash) c.category = section.substr(slash + 1, last - slash - 1);
  }
  std::vector<ProbeChoice> out;
  for (const auto& p : order) {
    ProbeChoice c = by_probe[p];
    if (policy.disabled.count(c.probe)) {
      c.error = "disabled";
    } else {
      c.kind = first_kind_from(c, 0, policy, catalog, &c.error);
      if (c.kind) c.error.clear();
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::optional<ProbeKind> next_probe_kind(const ProbeChoice& c, const ProbeKindPolicy& policy,
                                         const TracepointCatalog& catalog) {
  if (!c.kind) return std::nullopt;
  return first_kind_from(c, static_cast<int>(*c.kind) + 1, policy, catalog, nullptr);
}

bpf_program* chosen_program(bpf_object* obj, const ProbeChoice& c) {
  if (!c.kind) return nullptr;
  return bpf_object__find_program_by_name(obj, (c.probe + probe_kind_suffix(*c.kind)).c_str());
}

void apply_probe_choices(bpf_object* obj, const std::vector<ProbeChoice>& choices) {
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) bpf_program__set_autoload(prog, false);
  for (const auto& c : choices)
    if (auto* p = chosen_program(obj, c)) bpf_program__set_autoload(p, true);
}

Result<std::vector<ProbeChoice>> load_with_fallback(std::vector<ProbeChoice> choices, const ProbeKindPolicy& policy,
                                                    const TracepointCatalog& catalog, const TryLoad& try_load) {
  auto whole = try_load(choices);
  if (whole.ok()) return choices;
  // No privilege: every probe would fail alike.
  int code = whole.error().code().value();
  if (code == EPERM || code == EACCES)
    return sys_error(code, "loading eBPF programs needs root (or CAP_BPF and CAP_PERFMON)");
  // Find, probe by probe, a kind that loads on its own.
  for (auto& c : choices) {
    while (c.kind) {
      std::vector<ProbeChoice> alone;
      for (const auto& other : choices) {
        ProbeChoice o = other;
        if (o.probe != c.probe) o.kind.reset();
        alone.push_back(o);
      }
      auto r = try_load(alone);
      if (r.ok()) break;
      if (!c.error.empty()) c.error += "; ";
      c.error += std::string(probe_kind_name(*c.kind)) + ": " + r.error().what();
      c.kind = next_probe_kind(c, policy, catalog);
    }
  }
  bool any = false;
  for (const auto& c : choices) any = any || c.kind.has_value();
  if (!any) return sys_error(code, "no probe program loads: " + std::string(whole.error().what()));
  auto again = try_load(choices);
  if (!again.ok()) return with_context(again.error(), "loading the probes that each loaded alone");
  return choices;
}

}  // namespace spark::telemetry
