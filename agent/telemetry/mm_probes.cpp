#include "telemetry/mm_probes.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/fs.h"
#include "mm_probes.skel.h"
#include "telemetry/bpf_object.h"
#include "telemetry/bpf_skeleton.h"
#include "telemetry/cgroup_resolver.h"

namespace spark::telemetry {

namespace {

using MmProbesSkeleton = BpfSkeleton<mm_probes, mm_probes__open, mm_probes__load, mm_probes__destroy>;

int pageblock_order_of(const HostPaths& paths) {
  auto text = read_file(paths.proc / "pagetypeinfo");
  if (text.ok()) {
    for (const auto& line : split_lines(*text)) {
      if (line.rfind("Page block order:", 0) == 0) {
        try {
          return std::stoi(line.substr(17));
        } catch (const std::exception&) {
        }
      }
    }
  }
  return 9;  // HPAGE_PMD_ORDER with 4 KiB pages
}

}  // namespace

struct MmProbes::Impl {
  HostPaths paths;
  MmProbeOptions options;
  // The kernel's BTF (several MiB parsed): needed to choose and load, released after.
  std::unique_ptr<KernelTracepointCatalog> catalog;
  std::vector<ProbeChoice> choices;
  MmProbesSkeleton skel;
  std::vector<bpf_link*> links;
  ring_buffer* rb = nullptr;
  std::vector<mm_event> pending;
  CgroupResolver resolver;
  uint32_t page_kb = 4;
  int pageblock_order = 9;

  Impl(const HostPaths& p, const MmProbeOptions& o)
      : paths(p), options(o), catalog(std::make_unique<KernelTracepointCatalog>(p)), resolver(p) {}
  ~Impl() {
    if (rb) ring_buffer__free(rb);
    for (auto* l : links) bpf_link__destroy(l);
  }
};

MmProbes::MmProbes(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MmProbes::MmProbes(MmProbes&&) noexcept = default;
MmProbes& MmProbes::operator=(MmProbes&&) noexcept = default;
MmProbes::~MmProbes() = default;

Result<MmProbes> MmProbes::open(const HostPaths& paths, const MmProbeOptions& options) {
  auto impl = std::make_unique<Impl>(paths, options);
  if (!impl->catalog->has_btf())
    return sys_error(ENOTSUP, "the kernel has no BTF (/sys/kernel/btf/vmlinux): eBPF probes need it; procfs only");
  long page = ::sysconf(_SC_PAGESIZE);
  impl->page_kb = static_cast<uint32_t>(page > 0 ? page / 1024 : 4);
  impl->pageblock_order = pageblock_order_of(paths);
  {
    SPARK_TRY(auto probe, MmProbesSkeleton::open("mm_probes"));
    impl->choices = choose_probe_kinds(probe->obj, options.kinds, *impl->catalog);
  }
  return MmProbes(std::move(impl));
}

Result<void> MmProbes::load() {
  Impl& m = *impl_;
  if (m.skel) return sys_error(EALREADY, "mm_probes already loaded");
  auto try_load = [&m](const std::vector<ProbeChoice>& with) -> Result<void> {
    SPARK_TRY(m.skel, MmProbesSkeleton::try_load("mm_probes", [&m, &with](mm_probes& s) {
                s.rodata->page_kb = m.page_kb;
                s.rodata->pageblock_order = m.pageblock_order;
                apply_probe_choices(s.obj, with);
              }));
    return {};
  };
  if (!m.catalog) return sys_error(EALREADY, "mm_probes: load after a failed load; open again");
  SPARK_TRY(m.choices, load_with_fallback(m.choices, m.options.kinds, *m.catalog, try_load));
  m.catalog.reset();
  // libbpf parsed the kernel's BTF for CO-RE too; give the freed heap back (a daemon keeps this
  // process for weeks).
  ::malloc_trim(0);
  m.skel->bss->stall_threshold_ns = static_cast<uint64_t>(m.options.stall_threshold.count());
  return {};
}

Result<void> MmProbes::attach() {
  Impl& m = *impl_;
  if (!m.skel) return sys_error(EINVAL, "mm_probes: attach before load");
  size_t ok = 0;
  std::string errors;
  for (auto& c : m.choices) {
    bpf_program* p = chosen_program(m.skel->obj, c);
    if (!p || c.attached) {
      ok += c.attached;
      continue;
    }
    bpf_link* link = bpf_program__attach(p);
    if (!link) {
      int err = errno;
      c.error = std::string("attaching ") + probe_kind_name(*c.kind) + ": " + std::strerror(err);
      errors += (errors.empty() ? "" : "; ") + c.probe + ": " + c.error;
      continue;
    }
    m.links.push_back(link);
    c.attached = true;
    ++ok;
  }
  if (ok == 0)
    return sys_error(ENOENT, "no memory probe attached: " + (errors.empty() ? "no probe could load" : errors));
  if (!m.rb) {
    m.rb = ring_buffer__new(
        bpf_map__fd(m.skel->maps.events),
        [](void* ctx, void* data, size_t size) -> int {
          auto* self = static_cast<Impl*>(ctx);
          if (size >= sizeof(mm_event)) {
            mm_event e;
            std::memcpy(&e, data, sizeof e);
            self->pending.push_back(e);
          }
          return 0;
        },
        &m, nullptr);
    if (!m.rb) return errno_error("creating the BPF ring buffer reader");
  }
  return {};
}

Result<MmProbes> MmProbes::start(const HostPaths& paths, const MmProbeOptions& options) {
  SPARK_TRY(MmProbes p, open(paths, options));
  SPARK_TRY_VOID(p.load());
  SPARK_TRY_VOID(p.attach());
  return p;
}

const std::vector<ProbeChoice>& MmProbes::choices() const { return impl_->choices; }

std::vector<std::string> MmProbes::describe() const {
  std::vector<std::string> out;
  for (const auto& c : impl_->choices) {
    std::string line = c.probe + ": ";
    if (c.kind && c.attached)
      line += probe_kind_name(*c.kind);
    else
      line += "none";
    if (!c.error.empty()) line += " (" + c.error + ")";
    out.push_back(line);
  }
  return out;
}

void MmProbes::detach() {
  Impl& m = *impl_;
  for (auto* l : m.links) bpf_link__destroy(l);
  m.links.clear();
  for (auto& c : m.choices) c.attached = false;
}

std::vector<uint32_t> MmProbes::program_ids() const {
  return impl_->skel ? loaded_program_ids(impl_->skel->obj) : std::vector<uint32_t>{};
}

size_t MmProbes::attached_count() const {
  size_t n = 0;
  for (const auto& c : impl_->choices) n += c.attached;
  return n;
}

Result<MmSnapshot> MmProbes::snapshot() const {
  const Impl& m = *impl_;
  if (!m.skel) return sys_error(EINVAL, "mm_probes not loaded");
  MmSnapshot s;
  for (uint32_t i = 0; i < MM_COUNTERS; ++i) {
    SPARK_TRY(auto per_cpu, read_percpu<uint64_t>(m.skel->maps.counters, i));
    for (auto v : per_cpu) s.counters.raw[i] += v;
  }
  for (uint32_t k = 0; k < MM_HIST_KINDS; ++k) {
    SPARK_TRY(auto per_cpu, read_percpu<mm_hist>(m.skel->maps.hists, k));
    LatencyHistogram& h = s.hists[k];
    for (const auto& v : per_cpu) {
      for (size_t i = 0; i < MM_HIST_SLOTS; ++i) h.slots[i] += v.slots[i];
      h.count += v.count;
      h.sum_ns += v.sum_ns;
      h.max_ns = std::max<uint64_t>(h.max_ns, v.max_ns);
    }
  }
  return s;
}

Result<void> MmProbes::set_stall_threshold(std::chrono::nanoseconds ns) {
  if (!impl_->skel) return sys_error(EINVAL, "mm_probes not loaded");
  impl_->skel->bss->stall_threshold_ns = static_cast<uint64_t>(ns.count());
  return {};
}

int MmProbes::event_fd() const { return impl_->rb ? ring_buffer__epoll_fd(impl_->rb) : -1; }

Result<int> MmProbes::poll_events(std::chrono::milliseconds timeout,
                                  const std::function<void(const MmEvent&)>& on_event) {
  Impl& m = *impl_;
  if (!m.rb) return sys_error(EINVAL, "mm_probes not attached");
  int n = ring_buffer__poll(m.rb, static_cast<int>(timeout.count()));
  if (n < 0 && n != -EINTR) return sys_error(-n, "polling the BPF ring buffer");
  // Stall events are submitted without a wakeup: drain whatever is there.
  int c = ring_buffer__consume(m.rb);
  if (c < 0 && c != -EINTR) return sys_error(-c, "draining the BPF ring buffer");
  std::vector<mm_event> batch;
  batch.swap(m.pending);
  for (const auto& raw : batch) {
    MmEvent e;
    e.raw = raw;
    e.comm.assign(raw.comm, strnlen(raw.comm, sizeof raw.comm));
    e.memcg_path = m.resolver.path_of(raw.memcg_id);
    e.oom_memcg_path = m.resolver.path_of(raw.oom_memcg_id);
    on_event(e);
  }
  return static_cast<int>(batch.size());
}

}  // namespace spark::telemetry
