#include "telemetry/reclaim_wake.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>

#include "floor_wake.skel.h"
#include "telemetry/bpf_features.h"
#include "telemetry/bpf_skeleton.h"

namespace spark::telemetry {

namespace {

const char* const k_probes[] = {"kswapd_wake", "direct_reclaim", "memcg_reclaim"};

using FloorWakeSkeleton = BpfSkeleton<floor_wake, floor_wake__open, floor_wake__load, floor_wake__destroy>;

}  // namespace

struct ReclaimWake::Impl {
  FloorWakeSkeleton skel;
  std::vector<bpf_link*> links;
  ring_buffer* rb = nullptr;
  size_t got = 0;
  ~Impl() {
    if (rb) ring_buffer__free(rb);
    for (auto* l : links) bpf_link__destroy(l);
  }
};

ReclaimWake::ReclaimWake(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReclaimWake::~ReclaimWake() = default;

Result<std::unique_ptr<ReclaimWake>> ReclaimWake::open(const HostPaths& paths, std::chrono::microseconds min_gap) {
  (void)paths;  // libbpf finds the kernel's BTF itself (/sys/kernel/btf/vmlinux)
  std::string why;
  for (ProbeKind kind : {ProbeKind::tp_btf, ProbeKind::raw_tp, ProbeKind::tp}) {
    auto impl = std::make_unique<Impl>();
    const std::string suffix = probe_kind_suffix(kind);
    auto skel = FloorWakeSkeleton::try_load("floor_wake", [&](floor_wake& s) {
      s.rodata->min_gap_ns = static_cast<uint64_t>(min_gap.count()) * 1000;
      bpf_program* p = nullptr;
      bpf_object__for_each_program(p, s.obj) {
        std::string n = bpf_program__name(p);
        bpf_program__set_autoload(
            p, n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0);
      }
    });
    if (!skel) {
      why += std::string(why.empty() ? "" : "; ") + probe_kind_name(kind) + ": " + describe(skel.error());
      continue;
    }
    impl->skel = std::move(*skel);
    std::vector<std::string> attached;
    std::string attach_errors;
    for (const char* probe : k_probes) {
      std::string name = std::string(probe) + suffix;
      bpf_program* prog = bpf_object__find_program_by_name(impl->skel->obj, name.c_str());
      bpf_link* link = prog ? bpf_program__attach(prog) : nullptr;
      if (!link) {
        attach_errors += std::string(attach_errors.empty() ? "" : ", ") + probe + ": " + std::strerror(errno);
        continue;
      }
      impl->links.push_back(link);
      attached.push_back(probe);
    }
    if (attached.empty()) {
      why += std::string(why.empty() ? "" : "; ") + probe_kind_name(kind) + ": attaching: " + attach_errors;
      continue;
    }
    impl->rb = ring_buffer__new(
        bpf_map__fd(impl->skel->maps.wakes),
        [](void* ctx, void*, size_t) -> int {
          ++static_cast<Impl*>(ctx)->got;
          return 0;
        },
        impl.get(), nullptr);
    if (!impl->rb) return errno_error("creating the floor_wake ring buffer reader");
    std::unique_ptr<ReclaimWake> w(new ReclaimWake(std::move(impl)));
    w->attached_ = std::move(attached);
    w->kind_ = probe_kind_name(kind);
    return w;
  }
  return sys_error(ENOTSUP, "reclaim tracepoints for the floor: " + why);
}

int ReclaimWake::fd() const { return ring_buffer__epoll_fd(impl_->rb); }

size_t ReclaimWake::drain() {
  impl_->got = 0;
  (void)ring_buffer__consume(impl_->rb);
  return impl_->got;
}

std::string ReclaimWake::name() const {
  std::string s = "reclaim tracepoints (" + kind_ + ":";
  for (size_t i = 0; i < attached_.size(); ++i) s += (i ? ", " : " ") + attached_[i];
  return s + ")";
}

ReclaimWakeCounts ReclaimWake::counts() const {
  const auto* b = impl_->skel->bss;
  return {b->seen[0], b->seen[1], b->seen[2], b->sent, b->lost};
}

}  // namespace spark::telemetry
