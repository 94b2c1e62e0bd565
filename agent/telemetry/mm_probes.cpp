#include "telemetry/mm_probes.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

#include "core/fs.h"
#include "mm_deep.skel.h"
#include "mm_probes.skel.h"

namespace spark {

// ---- histogram / snapshot arithmetic -------------------------------------------------------

uint64_t LatencyHistogram::quantile_ns(double p) const {
  uint64_t total = 0;
  for (auto s : slots) total += s;
  if (total == 0) return 0;
  auto rank = static_cast<uint64_t>(p * static_cast<double>(total));
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    seen += slots[i];
    if (seen >= rank) return std::min<uint64_t>(max_ns ? max_ns : UINT64_MAX, (uint64_t{2} << i) - 1);
  }
  return max_ns;
}

LatencyHistogram LatencyHistogram::minus(const LatencyHistogram& e) const {
  LatencyHistogram d;
  for (size_t i = 0; i < slots.size(); ++i) d.slots[i] = slots[i] >= e.slots[i] ? slots[i] - e.slots[i] : 0;
  d.count = count >= e.count ? count - e.count : 0;
  d.sum_ns = sum_ns >= e.sum_ns ? sum_ns - e.sum_ns : 0;
  d.max_ns = max_ns;  // the maximum since attach: an interval maximum is not recoverable
  return d;
}

MmCounters MmCounters::minus(const MmCounters& e) const {
  MmCounters d;
  for (size_t i = 0; i < raw.size(); ++i) d.raw[i] = raw[i] >= e.raw[i] ? raw[i] - e.raw[i] : 0;
  return d;
}

MmSnapshot MmSnapshot::minus(const MmSnapshot& e) const {
  MmSnapshot d;
  d.counters = counters.minus(e.counters);
  for (size_t i = 0; i < hists.size(); ++i) d.hists[i] = hists[i].minus(e.hists[i]);
  return d;
}

const char* hist_kind_name(mm_hist_kind k) {
  switch (k) {
    case MM_HIST_DIRECT_RECLAIM:
      return "direct_reclaim";
    case MM_HIST_MEMCG_RECLAIM:
      return "memcg_reclaim";
    case MM_HIST_COMPACTION_DIRECT:
      return "compaction_direct";
    case MM_HIST_COMPACTION_OTHER:
      return "compaction_other";
    default:
      return "?";
  }
}

const char* compact_result_name(int status) {
  static const char* names[] = {"not_suitable_zone", "skipped",         "deferred",  "no_suitable_page", "continue",
                                "complete",          "partial_skipped", "contended", "success"};
  return status >= 0 && status < 9 ? names[status] : "other";
}

// ---- cgroup ids to paths -------------------------------------------------------------------

std::string CgroupResolver::path_of(uint64_t id) {
  if (id == 0) return "";
  for (const auto& [cid, p] : cache_)
    if (cid == id) return p;
  std::string found;
  for (const auto& base : {paths_.cgroup / "memory", paths_.cgroup / "unified", paths_.cgroup}) {
    std::error_code ec;
    struct stat st {};
    if (::stat(base.c_str(), &st) != 0) continue;
    if (st.st_ino == id) {
      found = "/";
      break;
    }
    for (auto it = std::filesystem::recursive_directory_iterator(
             base, std::filesystem::directory_options::skip_permission_denied, ec);
         it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (!it->is_directory(ec)) continue;
      if (::stat(it->path().c_str(), &st) == 0 && st.st_ino == id) {
        found = "/" + std::filesystem::relative(it->path(), base).string();
        break;
      }
    }
    if (!found.empty()) break;
  }
  if (!found.empty()) cache_.emplace_back(id, found);
  return found;
}

// ---- helpers ---------------------------------------------------------------------------------

namespace {

// libbpf's own messages stay quiet: failures come back as errors with context.
int quiet_print(enum libbpf_print_level, const char*, va_list) {
  return 0;
}

struct QuietLibbpf {
  libbpf_print_fn_t old;
  QuietLibbpf() : old(libbpf_set_print(quiet_print)) {}
  ~QuietLibbpf() { libbpf_set_print(old); }
};

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

template <typename T>
Result<std::vector<T>> read_percpu(bpf_map* map, uint32_t key) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return sys_error(-ncpu, "counting possible CPUs");
  static_assert(sizeof(T) % 8 == 0, "per-CPU values are 8-byte aligned");
  std::vector<T> values(static_cast<size_t>(ncpu));
  if (bpf_map__lookup_elem(map, &key, sizeof key, values.data(), values.size() * sizeof(T), 0) != 0)
    return errno_error(std::string("reading BPF map ") + bpf_map__name(map));
  return values;
}

// The kernel ids of an object's loaded programs.
std::vector<uint32_t> loaded_program_ids(bpf_object* obj) {
  std::vector<uint32_t> ids;
  bpf_program* p = nullptr;
  bpf_object__for_each_program(p, obj) {
    int fd = bpf_program__fd(p);
    if (fd < 0) continue;
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) ids.push_back(info.id);
  }
  return ids;
}

}  // namespace

// ---- MmProbes --------------------------------------------------------------------------------

struct MmProbes::Impl {
  HostPaths paths;
  MmProbeOptions options;
  // The kernel's BTF (several MiB parsed): needed to choose and load, released after.
  std::unique_ptr<KernelTracepointCatalog> catalog;
  std::vector<ProbeChoice> choices;
  mm_probes* skel = nullptr;
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
    if (skel) mm_probes__destroy(skel);
  }

  Result<mm_probes*> open_configured(const std::vector<ProbeChoice>& with) const {
    mm_probes* s = mm_probes__open();
    if (!s) return errno_error("opening the mm_probes BPF object");
    s->rodata->page_kb = page_kb;
    s->rodata->pageblock_order = pageblock_order;
    apply_probe_choices(s->obj, with);
    return s;
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
  QuietLibbpf quiet;
  mm_probes* probe = mm_probes__open();
  if (!probe) return errno_error("opening the mm_probes BPF object");
  impl->choices = choose_probe_kinds(probe->obj, options.kinds, *impl->catalog);
  mm_probes__destroy(probe);
  return MmProbes(std::move(impl));
}

Result<void> MmProbes::load() {
  Impl& m = *impl_;
  if (m.skel) return sys_error(EALREADY, "mm_probes already loaded");
  QuietLibbpf quiet;
  auto try_load = [&m](const std::vector<ProbeChoice>& with) -> Result<void> {
    SPARK_TRY(mm_probes * s, m.open_configured(with));
    if (int err = mm_probes__load(s); err != 0) {
      mm_probes__destroy(s);
      return sys_error(-err, "loading mm_probes");
    }
    if (m.skel) mm_probes__destroy(m.skel);
    m.skel = s;
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
  QuietLibbpf quiet;
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

const std::vector<ProbeChoice>& MmProbes::choices() const {
  return impl_->choices;
}

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

int MmProbes::event_fd() const {
  return impl_->rb ? ring_buffer__epoll_fd(impl_->rb) : -1;
}

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

// ---- DeepProbe -------------------------------------------------------------------------------

struct DeepProbe::Impl {
  std::unique_ptr<KernelTracepointCatalog> catalog;
  std::vector<ProbeChoice> choices;
  mm_deep* skel = nullptr;
  // In attach order: task_switch before page_alloc, so every counted allocation's task is flushed
  // when it leaves the CPU; detached in reverse (page_alloc first).
  std::vector<bpf_link*> links;
  std::vector<bpf_program*> progs;  // what links attach, in attach order
  std::string kind;  // page_alloc's program type
  std::chrono::steady_clock::time_point started;
  std::chrono::steady_clock::time_point stopped;
  explicit Impl(const HostPaths& p) : catalog(std::make_unique<KernelTracepointCatalog>(p)) {}
  void detach() {
    while (!links.empty()) {
      bpf_link__destroy(links.back());
      links.pop_back();
    }
  }
  ~Impl() {
    detach();
    if (skel) mm_deep__destroy(skel);
  }
};

DeepProbe::DeepProbe(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeepProbe::DeepProbe(DeepProbe&&) noexcept = default;
DeepProbe& DeepProbe::operator=(DeepProbe&&) noexcept = default;
DeepProbe::~DeepProbe() = default;

Result<DeepProbe> DeepProbe::start(const HostPaths& paths, const ProbeKindPolicy& kinds) {
  auto impl = std::make_unique<Impl>(paths);
  if (!impl->catalog->has_btf()) return sys_error(ENOTSUP, "the kernel has no BTF: deep mode needs eBPF");
  QuietLibbpf quiet;
  mm_deep* probe = mm_deep__open();
  if (!probe) return errno_error("opening the mm_deep BPF object");
  impl->choices = choose_probe_kinds(probe->obj, kinds, *impl->catalog);
  mm_deep__destroy(probe);
  Impl& d = *impl;
  auto try_load = [&d](const std::vector<ProbeChoice>& with) -> Result<void> {
    mm_deep* s = mm_deep__open();
    if (!s) return errno_error("opening the mm_deep BPF object");
    apply_probe_choices(s->obj, with);
    if (int err = mm_deep__load(s); err != 0) {
      mm_deep__destroy(s);
      return sys_error(-err, "loading mm_deep");
    }
    if (d.skel) mm_deep__destroy(d.skel);
    d.skel = s;
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

}  // namespace spark
