#include <gtest/gtest.h>

#include "core/fs.h"
#include "profile/profile.h"
#include "profile/profile_ops.h"
#include "profile/resolve.h"
#include "support/fixture.h"

using spark::state::sysctl_target;

using spark::tune::HostActuator, spark::tune::Tuner;

using spark::profile::ProfileStore, spark::profile::ResolvedProfile, spark::profile::VerifyRow,
    spark::profile::apply_profile, spark::profile::guardrail_violations, spark::profile::k_persist_file_name,
    spark::profile::parse_profile, spark::profile::resolve_named_profile, spark::profile::resolve_profile,
    spark::profile::verify_profile;

namespace spark {
namespace {

class ProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root.meminfo(128ull * 1024 * 1024, 100ull * 1024 * 1024);  // a 128 GiB host
    for (auto [k, v] : std::vector<std::pair<const char*, const char*>>{{"min_free_kbytes", "67584"},
                                                                        {"watermark_scale_factor", "10"},
                                                                        {"vfs_cache_pressure", "100"},
                                                                        {"dirty_ratio", "20"},
                                                                        {"dirty_background_ratio", "10"},
                                                                        {"dirty_bytes", "0"},
                                                                        {"dirty_background_bytes", "0"},
                                                                        {"swappiness", "60"},
                                                                        {"zone_reclaim_mode", "0"},
                                                                        {"overcommit_memory", "0"}})
      root.write(std::string("proc/sys/vm/") + k, std::string(v) + "\n");
    root.write("sys/kernel/mm/transparent_hugepage/defrag", "always defer defer+madvise [madvise] never\n");
    root.write("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n");
    setenv("SPARK_TUNE_POLICY_DIR", (root.root() / "shipped").c_str(), 1);
  }
  void TearDown() override { unsetenv("SPARK_TUNE_POLICY_DIR"); }
  void profile(const std::string& name, const std::string& text, const std::string& dir = "shipped") {
    root.write(dir + "/" + name + ".toml", text);
  }
  std::string vm(const std::string& k) { return trim(root.read("proc/sys/vm/" + k)); }
  Result<ResolvedProfile> resolve(const std::string& name) { return resolve_named_profile(root.paths(), name, act); }

  test::FixtureRoot root;
  HostActuator act{root.paths()};
};

TEST_F(ProfileTest, UnknownKeyIsAnErrorWithFileAndLine) {
  auto p = parse_profile("[profile]\ndescription = \"x\"\n\n[sysctl]\nvm.dirty_ration = 5\n", "bad", "bad.toml");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(std::string(p.error().what()).find("bad.toml:5"), std::string::npos) << p.error().what();
  EXPECT_NE(std::string(p.error().what()).find("vm.dirty_ration"), std::string::npos);
  auto q = parse_profile("[sysctl]\nvm.dirty_ratio = 5\n[windoww]\nttl = 1\n", "bad", "bad.toml");
  ASSERT_FALSE(q.ok());
  EXPECT_NE(std::string(q.error().what()).find("bad.toml:3"), std::string::npos) << q.error().what();
  auto syntax = parse_profile("[sysctl\n", "bad", "bad.toml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(std::string(syntax.error().what()).find("bad.toml:1"), std::string::npos);
}

TEST_F(ProfileTest, ExtraKeysOnlyInTheExtraTableAndOnlyVmOrKernel) {
  EXPECT_FALSE(parse_profile("[sysctl]\nkernel.numa_balancing = 0\n", "p", "p.toml").ok());
  auto ok = parse_profile("[sysctl.extra]\nkernel.numa_balancing = 0\n", "p", "p.toml");
  ASSERT_TRUE(ok.ok()) << ok.error().what();
  EXPECT_EQ(ok->settings[0].key.name, "kernel.numa_balancing");
  EXPECT_FALSE(parse_profile("[sysctl.extra]\nnet.core.somaxconn = 1\n", "p", "p.toml").ok());
  EXPECT_FALSE(parse_profile("[sysctl.extra]\nvm.dirty_ratio = 1\n", "p", "p.toml").ok());
  EXPECT_FALSE(parse_profile("[sysctl.extra]\n\"vm/../../x\" = 1\n", "p", "p.toml").ok());
  EXPECT_FALSE(parse_profile("[sysctl.extra]\n\"vm..x\" = 1\n", "p", "p.toml").ok());
}

TEST_F(ProfileTest, InheritanceChildWinsAndLoopsAreRefused) {
  profile("base", "[sysctl]\nvm.dirty_ratio = 10\nvm.swappiness = 10\n");
  profile("child", "[profile]\ninherit = \"base\"\n[sysctl]\nvm.dirty_ratio = 5\n");
  auto r = resolve("child");
  ASSERT_TRUE(r.ok()) << r.error().what();
  ASSERT_EQ(r->settings.size(), 2u);
  EXPECT_EQ(r->settings[0].key, "vm.dirty_ratio");
  EXPECT_EQ(r->settings[0].value, "5");
  EXPECT_EQ(r->settings[0].source, "child.toml:4");
  EXPECT_EQ(r->settings[1].value, "10");
  profile("a", "[profile]\ninherit = \"b\"\n");
  profile("b", "[profile]\ninherit = \"a\"\n");
  auto loop = resolve("a");
  ASSERT_FALSE(loop.ok());
  EXPECT_NE(std::string(loop.error().what()).find("loops"), std::string::npos);
}

TEST_F(ProfileTest, OperatorDirectoryShadowsShipped) {
  profile("dgx", "[sysctl]\nvm.dirty_ratio = 5\n");
  profile("dgx", "[sysctl]\nvm.dirty_ratio = 7\n", "etc/spark-tune/profiles");
  auto r = resolve("dgx");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->settings[0].value, "7");
  auto missing = resolve("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.error().what()).find("profile list"), std::string::npos);
  EXPECT_FALSE(resolve("../etc/passwd").ok());
}

TEST_F(ProfileTest, RelativeSizesAndClamps) {
  profile("p",
          "[sysctl]\nvm.min_free_kbytes = { value = \"4% of ram\", min = \"1G\", max = \"5G\" }\n"
          "vm.dirty_bytes = \"1G\"\nvm.dirty_background_bytes = \"256M\"\n");
  auto r = resolve("p");
  ASSERT_TRUE(r.ok()) << r.error().what();
  // 4% of 128 GiB = 5.12 GiB, clamped to 5 GiB = 5242880 KiB.
  EXPECT_EQ(r->settings[0].value, "5242880");
  EXPECT_EQ(r->settings[1].value, std::to_string(1ull << 30));
  EXPECT_EQ(r->settings[2].value, std::to_string(256ull << 20));
  // A 46 GB workstation: 4% = 1.84 GiB, inside the clamps.
  root.meminfo(46ull * 1000 * 1000 * 1000 / 1024, 30ull * 1024 * 1024);
  auto small = resolve("p");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->settings[0].value, std::to_string(static_cast<uint64_t>(46e9 * 0.04 / 1024 + 0.5)));
}

TEST_F(ProfileTest, RaiseAndLowerModifiers) {
  profile("p",
          "[sysctl]\nvm.min_free_kbytes = \">1G\"\nvm.dirty_ratio = \"<30\"\nvm.watermark_scale_factor = \">5\"\n"
          "vm.vfs_cache_pressure = \"<50\"\n");
  auto r = resolve("p");
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(r->settings[0].value, "1048576");  // raised
  EXPECT_EQ(r->settings[0].action, "set");
  EXPECT_EQ(r->settings[1].value, "20");  // would raise: kept
  EXPECT_EQ(r->settings[1].action, "keep (only lower)");
  EXPECT_EQ(r->settings[2].value, "10");
  EXPECT_EQ(r->settings[2].action, "keep (only raise)");
  EXPECT_EQ(r->settings[3].value, "50");  // lowered
}

TEST_F(ProfileTest, KernelRangeAndTypesAreChecked) {
  profile("range", "[sysctl]\nvm.dirty_ratio = 101\n");
  EXPECT_FALSE(resolve("range").ok());
  profile("unit", "[sysctl]\nvm.dirty_ratio = \"5G\"\n");
  EXPECT_FALSE(resolve("unit").ok());
  profile("pct", "[sysctl]\nvm.swappiness = \"4% of ram\"\n");
  EXPECT_FALSE(resolve("pct").ok());
  profile("choice", "[thp]\nenabled = \"sometimes\"\n");
  auto c = resolve("choice");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.error().what()).find("always, madvise, never"), std::string::npos);
}

TEST_F(ProfileTest, GuardrailsRefuseUnlessForcedAndChangeNothing) {
  profile("greedy", "[sysctl]\nvm.min_free_kbytes = \"20% of ram\"\nvm.dirty_ratio = 5\n");
  auto r = apply_profile(root.paths(), act, {"greedy", false, false, false});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), EPERM);
  EXPECT_NE(std::string(r.error().what()).find("above 10% of RAM"), std::string::npos);
  EXPECT_EQ(vm("min_free_kbytes"), "67584");
  EXPECT_EQ(vm("dirty_ratio"), "20");
  auto forced = apply_profile(root.paths(), act, {"greedy", false, false, true});
  ASSERT_TRUE(forced.ok()) << forced.error().what();
  EXPECT_EQ(vm("dirty_ratio"), "5");

  profile("nodirty", "[sysctl]\nvm.dirty_ratio = 0\n");
  auto z = apply_profile(root.paths(), act, {"nodirty", false, false, false});
  ASSERT_FALSE(z.ok());
  EXPECT_NE(std::string(z.error().what()).find("dirty_bytes 0"), std::string::npos);
  profile("bg", "[sysctl]\nvm.dirty_ratio = 5\nvm.dirty_background_ratio = 10\n");
  EXPECT_FALSE(apply_profile(root.paths(), act, {"bg", false, false, false}).ok());
}

TEST_F(ProfileTest, DryRunChangesNothing) {
  profile("p", "[sysctl]\nvm.dirty_ratio = 5\n");
  auto r = apply_profile(root.paths(), act, {"p", true, true, false});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->resolved.settings[0].action, "set");
  EXPECT_EQ(vm("dirty_ratio"), "20");
  EXPECT_FALSE(fs::exists(root.paths().journal_file()));
  EXPECT_FALSE(fs::exists(root.paths().sysctl_d / k_persist_file_name));
}

TEST_F(ProfileTest, PersistWritesDropInAndRevertRemovesIt) {
  profile("p", "[sysctl]\nvm.dirty_ratio = 5\n[thp]\ndefrag = \"defer+madvise\"\n");
  root.write("etc/sysctl.d/99-other.conf", "vm.dirty_ratio = 40\n");
  auto r = apply_profile(root.paths(), act, {"p", false, true, false});
  ASSERT_TRUE(r.ok()) << r.error().what();
  std::string dropin = root.read("etc/sysctl.d/90-spark-tune.conf");
  EXPECT_NE(dropin.find("vm.dirty_ratio = 5\n"), std::string::npos);
  EXPECT_NE(root.read("etc/tmpfiles.d/spark-tune.conf")
                .find("w /sys/kernel/mm/transparent_hugepage/defrag - - - - defer+madvise"),
            std::string::npos);
  ASSERT_EQ(r->boot_overrides.size(), 1u);  // 99-other.conf wins at boot
  EXPECT_NE(r->boot_overrides[0].source.find("99-other.conf:1"), std::string::npos);
  Tuner t(root.paths(), act);
  ASSERT_TRUE(t.revert_all().ok());
  EXPECT_FALSE(fs::exists(root.paths().sysctl_d / k_persist_file_name));
  EXPECT_FALSE(fs::exists(root.root() / "etc/tmpfiles.d/spark-tune.conf"));
  EXPECT_EQ(vm("dirty_ratio"), "20");
}

TEST_F(ProfileTest, VerifyDetectsDriftAndNamesWhoSetsTheKey) {
  profile("p", "[sysctl]\nvm.dirty_ratio = 5\nvm.swappiness = 10\n");
  ASSERT_TRUE(apply_profile(root.paths(), act, {"p", false, false, false}).ok());
  auto v = verify_profile(root.paths(), act, std::nullopt);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->drift());
  root.write("proc/sys/vm/dirty_ratio", "40\n");
  root.write("etc/sysctl.d/99-late.conf", "# comment\nvm.dirty_ratio=40\n");
  root.write("etc/tuned/active_profile", "throughput\n");
  root.write("usr/lib/tuned/throughput/tuned.conf", "[main]\nsummary=x\n[sysctl]\nvm.dirty_ratio = 40\n");
  v = verify_profile(root.paths(), act, std::nullopt);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->drift());
  const VerifyRow* row = nullptr;
  for (const auto& r : v->rows)
    if (r.key == "vm.dirty_ratio") row = &r;
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->status, "drift");
  ASSERT_EQ(row->set_by.size(), 2u);
  EXPECT_NE(row->set_by[0].find("99-late.conf:2"), std::string::npos);
  EXPECT_NE(row->set_by[1].find("tuned profile 'throughput'"), std::string::npos);
  // A window on top is not drift.
  Tuner t(root.paths(), act);
  ASSERT_TRUE(t.apply("window:w1", {{sysctl_target("vm.swappiness"), "1", ""}}).ok());
  v = verify_profile(root.paths(), act, std::nullopt);
  bool seen = false;
  for (const auto& r : v->rows) {
    if (r.key != "vm.swappiness") continue;
    seen = true;
    EXPECT_EQ(r.status, "held by window:w1");
  }
  EXPECT_TRUE(seen);
}

TEST_F(ProfileTest, ApplyAThenBThenRevertReturnsToBeforeA) {
  profile("a", "[sysctl]\nvm.dirty_ratio = 5\nvm.swappiness = 10\n");
  profile("b", "[sysctl]\nvm.dirty_ratio = 8\nvm.vfs_cache_pressure = 150\n");
  ASSERT_TRUE(apply_profile(root.paths(), act, {"a", false, false, false}).ok());
  ASSERT_TRUE(apply_profile(root.paths(), act, {"b", false, false, false}).ok());
  EXPECT_EQ(vm("dirty_ratio"), "8");
  EXPECT_EQ(vm("swappiness"), "60");  // b does not set it
  EXPECT_EQ(vm("vfs_cache_pressure"), "150");
  Tuner t(root.paths(), act);
  ASSERT_TRUE(t.revert_all().ok());
  EXPECT_EQ(vm("dirty_ratio"), "20");
  EXPECT_EQ(vm("vfs_cache_pressure"), "100");
}

TEST(ShippedProfiles, AllParseAndResolveOnSmallAndLargeHosts) {
  for (uint64_t gib : {16ull, 46ull, 128ull, 512ull}) {
    test::FixtureRoot root;
    root.meminfo(gib * 1024 * 1024, gib * 1024 * 1024 / 2);
    for (const char* k :
         {"min_free_kbytes", "watermark_scale_factor", "vfs_cache_pressure", "dirty_ratio", "dirty_background_ratio",
          "dirty_bytes", "dirty_background_bytes", "swappiness", "zone_reclaim_mode"})
      root.write(std::string("proc/sys/vm/") + k, "0\n");
    root.write("proc/sys/vm/dirty_ratio", "20\n");
    root.write("proc/sys/vm/dirty_background_ratio", "10\n");
    root.write("sys/kernel/mm/transparent_hugepage/defrag", "[madvise]\n");
    HostActuator act(root.paths());
    ProfileStore store(std::vector<fs::path>{SPARK_TUNE_SOURCE_POLICY_DIR});
    auto list = store.list();
    ASSERT_GE(list.size(), 4u);
    auto host = read_meminfo(root.paths());
    ASSERT_TRUE(host.ok());
    for (const auto& [name, file] : list) {
      auto chain = store.load_chain(file.string());
      ASSERT_TRUE(chain.ok()) << name << ": " << chain.error().what();
      auto r = resolve_profile(*chain, *host, act);
      ASSERT_TRUE(r.ok()) << name << ": " << r.error().what();
      EXPECT_TRUE(guardrail_violations(*r, *host, act).empty()) << name << " on " << gib << " GiB";
    }
  }
}

}  // namespace
}  // namespace spark

namespace spark {
namespace {

// The detector's deep-mode policy keys are known options of [detector]; an unknown one is refused.
TEST(ProfileDetectorOptions, DeepModeKeysAreAcceptedAndKept) {
  auto p = parse_profile("[detector]\nstall_ms = 0.5\ndeep_seconds = 5\ndeep_cooldown_s = 300\n", "d", "d.toml");
  ASSERT_TRUE(p.ok()) << p.error().what();
  EXPECT_EQ(p->options.at("detector.deep_seconds"), "5");
  EXPECT_EQ(p->options.at("detector.deep_cooldown_s"), "300");
  EXPECT_EQ(p->options.at("detector.stall_ms"), "0.5");
  auto bad = parse_profile("[detector]\ndeep_secs = 5\n", "d", "d.toml");
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace spark
