// Program-type selection per probe, with a fake kernel catalog and a fake loader (no privileges:
// the BPF object is only opened, never loaded).
#include "telemetry/probe_loader.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "mm_probes.skel.h"
#include "telemetry/bpf_skeleton.h"

using spark::telemetry::BpfSkeleton, spark::telemetry::ProbeChoice, spark::telemetry::ProbeKind,
    spark::telemetry::ProbeKindPolicy, spark::telemetry::TracepointCatalog, spark::telemetry::apply_probe_choices,
    spark::telemetry::choose_probe_kinds, spark::telemetry::load_with_fallback;

namespace spark {
namespace {

class FakeCatalog : public TracepointCatalog {
 public:
  std::set<std::string> no_btf;  // tracepoints missing from BTF
  bool tracefs = false;
  bool has_btf_tracepoint(const std::string& name) const override { return !no_btf.count(name); }
  bool has_tracefs_event(const std::string&, const std::string&) const override { return tracefs; }
};

using MmProbesSkeleton = BpfSkeleton<mm_probes, mm_probes__open, mm_probes__load, mm_probes__destroy>;

// The mm_probes object, opened (not loaded): what the loader chooses from.
struct Skel {
  Skel() {
    if (auto opened = MmProbesSkeleton::open("mm_probes")) {
      skel = std::move(opened).value();
      s = skel.get();
    }
  }
  MmProbesSkeleton skel;
  mm_probes* s = nullptr;
};

const ProbeChoice& find(const std::vector<ProbeChoice>& v, const std::string& name) {
  for (const auto& c : v)
    if (c.probe == name) return c;
  throw std::runtime_error("no probe " + name);
}

TEST(ProbeLoader, ChoosesFirstAvailableKindPerProbe) {
  Skel skel;
  ASSERT_NE(skel.s, nullptr);
  FakeCatalog cat;
  cat.no_btf = {"mark_victim"};
  cat.tracefs = true;
  auto choices = choose_probe_kinds(skel.s->obj, {}, cat);
  EXPECT_EQ(choices.size(), 11u);
  EXPECT_EQ(*find(choices, "compaction_begin").kind, ProbeKind::tp_btf);
  EXPECT_EQ(find(choices, "compaction_begin").tracepoint, "mm_compaction_begin");
  EXPECT_EQ(find(choices, "compaction_begin").category, "compaction");
  // Not in BTF: neither tp_btf nor raw_tp; classic tp through tracefs.
  EXPECT_EQ(*find(choices, "mark_victim").kind, ProbeKind::tp);
  cat.tracefs = false;
  choices = choose_probe_kinds(skel.s->obj, {}, cat);
  EXPECT_FALSE(find(choices, "mark_victim").kind);
  EXPECT_NE(find(choices, "mark_victim").error.find("tracefs"), std::string::npos);
}

TEST(ProbeLoader, PolicyForcesTpBtfOffAndDisablesProbes) {
  Skel skel;
  FakeCatalog cat;
  auto policy = ProbeKindPolicy::parse("raw_tp,tp");
  ASSERT_TRUE(policy.ok());
  policy->disabled = {"extfrag"};
  auto choices = choose_probe_kinds(skel.s->obj, *policy, cat);
  for (const auto& c : choices) {
    if (c.probe == "extfrag") {
      EXPECT_FALSE(c.kind);
      EXPECT_EQ(c.error, "disabled");
    } else {
      EXPECT_EQ(*c.kind, ProbeKind::raw_tp) << c.probe;
    }
  }
  EXPECT_FALSE(ProbeKindPolicy::parse("kprobe").ok());
  EXPECT_FALSE(ProbeKindPolicy::parse("").ok());
}

TEST(ProbeLoader, ApplyChoicesAutoloadsExactlyOneProgramPerProbe) {
  Skel skel;
  FakeCatalog cat;
  auto choices = choose_probe_kinds(skel.s->obj, {}, cat);
  apply_probe_choices(skel.s->obj, choices);
  int autoload = 0;
  bpf_program* p;
  bpf_object__for_each_program(p, skel.s->obj) {
    if (bpf_program__autoload(p)) {
      ++autoload;
      EXPECT_NE(std::string(bpf_program__name(p)).find("_btf"), std::string::npos);
    }
  }
  EXPECT_EQ(autoload, 11);
}

TEST(ProbeLoader, FallbackMovesARefusedProbeDownAndKeepsTheOthers) {
  Skel skel;
  FakeCatalog cat;
  cat.tracefs = true;
  auto choices = choose_probe_kinds(skel.s->obj, {}, cat);
  // The "kernel" refuses tp_btf for extfrag, and every kind for compact_retry.
  int loads = 0;
  auto try_load = [&](const std::vector<ProbeChoice>& with) -> Result<void> {
    ++loads;
    for (const auto& c : with) {
      if (!c.kind) continue;
      if (c.probe == "extfrag" && *c.kind == ProbeKind::tp_btf) return sys_error(EINVAL, "verifier says no");
      if (c.probe == "compact_retry") return sys_error(EPERM, "refused");
    }
    return {};
  };
  auto r = load_with_fallback(choices, {}, cat, try_load);
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(*find(*r, "extfrag").kind, ProbeKind::raw_tp);
  EXPECT_NE(find(*r, "extfrag").error.find("tp_btf: verifier says no"), std::string::npos);
  EXPECT_FALSE(find(*r, "compact_retry").kind);
  EXPECT_EQ(*find(*r, "compaction_end").kind, ProbeKind::tp_btf);
  EXPECT_GT(loads, 2);
}

}  // namespace
}  // namespace spark

namespace spark {
namespace {

TEST(ProbeLoader, NoPrivilegeFailsOnceWithAHint) {
  Skel skel;
  FakeCatalog cat;
  auto choices = choose_probe_kinds(skel.s->obj, {}, cat);
  int loads = 0;
  auto r = load_with_fallback(choices, {}, cat, [&](const std::vector<ProbeChoice>&) -> Result<void> {
    ++loads;
    return sys_error(EPERM, "loading mm_probes");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(loads, 1);  // no per-probe retries when nothing may load
  EXPECT_NE(std::string(r.error().what()).find("needs root"), std::string::npos);
}

}  // namespace
}  // namespace spark
