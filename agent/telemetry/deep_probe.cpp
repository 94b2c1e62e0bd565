#include "telemetry/deep_probe.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <map>
#include <thread>

#include "mm_deep.skel.h"
#include "telemetry/bpf_object.h"
#include "telemetry/bpf_skeleton.h"

namespace spark::telemetry {

namespace {
using MmDeepSkeleton = BpfSkeleton<mm_deep, mm_deep__open, mm_deep__load, mm_deep__destroy>;
}  // namespace

struct DeepProbe::Impl {
  std::unique_ptr<KernelTracepointCatalog> catalog;
  std::vector<ProbeChoice> choices;
  MmDeepSkeleton skel;
  // In attach order: task_switch before page_alloc, so every counted allocation's task is flushed
  // when it leaves the CPU; detached in reverse (page_alloc first).
  std::vector<bpf_link*> links;
  std::vector<bpf_program*> progs;  // what links attach, in attach order
  std::string kind;                 // page_alloc's program type
  std::chrono::steady_clock::time_point started;
  std::chrono::steady_clock::time_point stopped;
  explicit Impl(const HostPaths& p) : catalog(std::make_unique<KernelTracepointCatalog>(p)) {}
  void detach() {
    while (!links.empty()) {
      bpf_link__destroy(links.back());
      links.pop_back();
    }
  }
  ~Impl() { detach(); }
};

DeepProbe::DeepProbe(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeepProbe::DeepProbe(DeepProbe&&) noexcept = default;
DeepProbe& DeepProbe::operator=(DeepProbe&&) noexcept = default;
DeepProbe::~DeepProbe() = default;

Result<DeepProbe> DeepProbe::start(const HostPaths& paths, const ProbeKindPolicy& kinds) {
  auto impl = std::make_unique<Impl>(paths);
  if (!impl->catalog->has_btf()) return sys_error(ENOTSUP, "the kernel has no BTF: deep mode needs eBPF");
  {
    SPARK_TRY(auto probe, MmDeepSkeleton::open("mm_deep"));
    impl->choices = choose_probe_kinds(probe->obj, kinds, *impl->catalog);
  }
  Impl& d = *impl;
  auto try_load = [&d](const std::vector<ProbeChoice>& with) -> Result<void> {
    SPARK_TRY(d.skel, MmDeepSkeleton::try_load("mm_deep", [&with](mm_deep& s) { apply_probe_choices(s.obj, with); }));
    return {};
  };
  SPARK_TRY(d.choices, load_with_fallback(d.choices, kinds, *d.catalog, try_load));
  d.catalog.reset();
  // Both probes or none: page allocations are counted per CPU and given to a task only when it
  // leaves the CPU (sched_switch), so one without the other would misattribute them.
  const ProbeChoice* alloc = nullptr;
  const ProbeChoice* sw = nullptr;
  for (auto& c : d.choices) {
    if (c.probe == "page_alloc") alloc = &c;
    if (c.probe == "task_switch") sw = &c;
  }
  for (auto [c, what] : {std::pair{sw, "sched:sched_switch"}, std::pair{alloc, "kmem:mm_page_alloc"}})
    if (!c || !c->kind)
      return sys_error(ENOENT, std::string(what) + ": no program type loads" +
                                   (c && !c->error.empty() ? " (" + c->error + ")" : std::string()) +
                                   "; deep mode needs both");
  for (const ProbeChoice* c : {sw, alloc}) d.progs.push_back(chosen_program(d.skel->obj, *c));
  d.kind = probe_kind_name(*alloc->kind);
  DeepProbe out(std::move(impl));
  SPARK_TRY_VOID(out.resume());
  for (auto& c : out.impl_->choices) c.attached = true;
  return out;
}

Result<void> DeepProbe::resume() {
  Impl& d = *impl_;
  if (!d.links.empty()) return {};
  for (bpf_program* p : d.progs) {
    bpf_link* link = bpf_program__attach(p);
    if (!link) {
      int err = errno;
      d.detach();
      return sys_error(err, std::string("attaching deep mode's ") + bpf_program__name(p));
    }
    d.links.push_back(link);
  }
  // The period counts attached time only.
  auto now = std::chrono::steady_clock::now();
  d.started = d.stopped > d.started ? now - (d.stopped - d.started) : now;
  return {};
}

void DeepProbe::stop() {
  if (impl_ && !impl_->links.empty()) {
    impl_->detach();
    impl_->stopped = std::chrono::steady_clock::now();
  }
}

bool DeepProbe::attached() const { return impl_ && !impl_->links.empty(); }

std::vector<uint32_t> DeepProbe::program_ids() const {
  return impl_ && impl_->skel ? loaded_program_ids(impl_->skel->obj) : std::vector<uint32_t>{};
}

Result<DeepReport> DeepProbe::read(size_t top_n) const {
  const Impl& d = *impl_;
  DeepReport r;
  r.kind = d.kind;
  auto end = !d.links.empty() ? std::chrono::steady_clock::now() : d.stopped;
  r.seconds = std::chrono::duration<double>(end - d.started).count();
  std::map<uint32_t, AllocTask> tasks;
  // Counts still pending in each CPU's slot.
  SPARK_TRY(auto per_cpu, read_percpu<mm_deep_cpu>(d.skel->maps.deep_cpu, 0));
  for (const auto& c : per_cpu) {
    for (size_t o = 0; o < MM_ORDERS; ++o) r.orders[o] += c.orders[o];
    if (c.calls == 0) continue;
    AllocTask& t = tasks[c.tgid];
    t.tgid = c.tgid;
    t.calls += c.calls;
    t.pages += c.pages;
    // Pending counts are the newest: their name wins.
    t.comm.assign(c.comm, strnlen(c.comm, sizeof c.comm));
  }
  // Counts flushed to the shared hash.
  int fd = bpf_map__fd(d.skel->maps.alloc_tasks);
  uint32_t key = 0, next = 0;
  uint32_t* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    mm_alloc_task v{};
    if (bpf_map_lookup_elem(fd, &key, &v) != 0) continue;
    AllocTask& t = tasks[key];
    t.tgid = key;
    t.calls += v.calls;
    t.pages += v.pages;
    if (t.comm.empty()) t.comm.assign(v.comm, strnlen(v.comm, sizeof v.comm));
  }
  for (auto& [tgid, t] : tasks) r.top.push_back(std::move(t));
  std::sort(r.top.begin(), r.top.end(), [](const AllocTask& a, const AllocTask& b) { return a.pages > b.pages; });
  if (r.top.size() > top_n) r.top.resize(top_n);
  return r;
}

Result<DeepReport> run_deep(const HostPaths& paths, const ProbeKindPolicy& kinds, std::chrono::milliseconds period,
                            size_t top_n) {
  SPARK_TRY(DeepProbe deep, DeepProbe::start(paths, kinds));
  std::this_thread::sleep_for(period);
  deep.stop();
  return deep.read(top_n);
}

}  // namespace spark::telemetry
