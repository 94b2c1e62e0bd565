#include "gpu/preflight.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpu/model_files.h"
#include "profile/profile_ops.h"
#include "profile/profile_options.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "telemetry/host_fit.h"
#include "telemetry/memory_holders.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

using spark::tune::ApplyOptions, spark::tune::HostActuator, spark::tune::Tuner;

using spark::telemetry::FragPolicy, spark::telemetry::NodeBuddy, spark::telemetry::Severity,
    spark::telemetry::judge_fragmentation, spark::telemetry::large_order_for_page_size,
    spark::telemetry::largest_cgroups, spark::telemetry::ram_fit, spark::telemetry::read_node_buddy;

using spark::profile::k_profile_owner, spark::profile::profile_options;

using spark::gpu::ModelFiles, spark::gpu::PreflightRequest, spark::gpu::Verdict, spark::gpu::model_files,
    spark::gpu::run_preflight;

namespace spark {
namespace {

constexpr uint64_t k_gib = 1ull << 30;
constexpr uint64_t k_kib = 1024;

// buddyinfo for one zone: counts per order 0..10.
std::string zone_line(int node, const char* zone, const std::vector<uint64_t>& counts) {
  std::string s = "Node " + std::to_string(node) + ", zone " + zone;
  for (auto c : counts) s += " " + std::to_string(c);
  return s + "\n";
}
// ~4 GiB free, mostly in order-10 blocks.
const std::vector<uint64_t> k_healthy = {100, 100, 100, 50, 50, 20, 10, 10, 5, 10, 1000};
// ~4 GiB free, all of it in order 0..3 blocks: nothing of 2 MiB or more.
const std::vector<uint64_t> k_shattered = {400000, 200000, 50000, 20000, 0, 0, 0, 0, 0, 0, 0};
// ~4 GiB free with ~30% in large blocks.
const std::vector<uint64_t> k_partial = {300000, 100000, 40000, 10000, 0, 0, 0, 0, 0, 10, 300};

void host(const test::FixtureRoot& root, uint64_t available_bytes, const std::string& buddy) {
  root.meminfo(24 * k_gib / k_kib, available_bytes / k_kib);
  root.write("proc/buddyinfo", buddy);
}

TEST(HostFit, RamRuleArithmetic) {
  auto f = ram_fit(10 * k_gib, 1.25, k_gib, 12 * k_gib);
  EXPECT_EQ(f.need, 13 * k_gib + k_gib / 2);
  EXPECT_FALSE(f.fits);
  EXPECT_EQ(f.missing(), f.need - 12 * k_gib);
  auto g = ram_fit(10 * k_gib, 0.9, k_gib, 11 * k_gib);
  EXPECT_TRUE(g.fits);
  EXPECT_EQ(g.missing(), 0u);
}

// The published thresholds: a 17.4 GB model hung a host with 12 GiB available and loaded with 18 GiB
// (pinned host memory off, factor 0.9). With pinned memory (factor 1.1) even 18 GiB is refused.
struct ThresholdCase {
  double available_gib;
  double factor;
  Verdict expected;
};
class PublishedThresholds : public ::testing::TestWithParam<ThresholdCase> {};

TEST_P(PublishedThresholds, Decides) {
  const auto& c = GetParam();
  test::FixtureRoot root;
  host(root, static_cast<uint64_t>(c.available_gib * k_gib), zone_line(0, "Normal", k_healthy));
  PreflightRequest req;
  req.bytes = 17'400'000'000ull;
  req.factor = c.factor;
  req.page_size = 4096;
  auto rep = run_preflight(root.paths(), req);
  EXPECT_EQ(rep.verdict, c.expected) << rep.to_text();
  if (c.expected == Verdict::refused) {
    ASSERT_FALSE(rep.refusals.empty());
    EXPECT_NE(rep.refusals[0].find("missing"), std::string::npos);
    EXPECT_EQ(rep.ram.missing(), rep.ram.need - rep.ram.available);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Model17_4GB, PublishedThresholds,
    ::testing::Values(ThresholdCase{12, 0.9, Verdict::refused}, ThresholdCase{15, 0.9, Verdict::refused},
                      ThresholdCase{18, 0.9, Verdict::go}, ThresholdCase{12, 1.1, Verdict::refused},
                      ThresholdCase{15, 1.1, Verdict::refused}, ThresholdCase{18, 1.1, Verdict::refused},
                      ThresholdCase{19, 1.1, Verdict::go}));

TEST(HostFit, ParsesBuddyinfoPerNodeSummingZones) {
  test::FixtureRoot root;
  root.write("proc/buddyinfo", zone_line(0, "DMA", {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3}) +
                                   zone_line(0, "Normal", {5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 2}) +
                                   zone_line(1, "Normal", {7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  auto nodes = read_node_buddy(root.paths());
  ASSERT_TRUE(nodes.ok()) << nodes.error().what();
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].blocks[0], 5u);
  EXPECT_EQ((*nodes)[0].blocks[10], 5u);
  EXPECT_EQ((*nodes)[1].node, 1);
  root.write("proc/buddyinfo", "Node 0 zone Normal 1 2\n");
  EXPECT_FALSE(read_node_buddy(root.paths()).ok());
  root.write("proc/buddyinfo", "");
  EXPECT_FALSE(read_node_buddy(root.paths()).ok());
}

TEST(HostFit, LargeOrderFollowsPageSize) {
  EXPECT_EQ(large_order_for_page_size(4096), 9);
  EXPECT_EQ(large_order_for_page_size(16384), 7);
  EXPECT_EQ(large_order_for_page_size(65536), 5);
}

struct FragCase {
  const char* name;
  std::vector<uint64_t> counts;
  Severity expected;
};
class Fragmentation : public ::testing::TestWithParam<FragCase> {};

TEST_P(Fragmentation, JudgesEachNode) {
  const auto& c = GetParam();
  NodeBuddy n{0, c.counts};
  auto frag = judge_fragmentation({n}, 4096, FragPolicy{});
  ASSERT_EQ(frag.size(), 1u);
  EXPECT_EQ(frag[0].severity, c.expected) << c.name << " share " << frag[0].large_share;
  EXPECT_EQ(frag[0].severity == Severity::ok, frag[0].reason.empty());
}

INSTANTIATE_TEST_SUITE_P(Cases, Fragmentation,
                         ::testing::Values(FragCase{"healthy", k_healthy, Severity::ok},
                                           FragCase{"partial", k_partial, Severity::warn},
                                           FragCase{"shattered", k_shattered, Severity::refuse},
                                           // Little free memory is a RAM problem, not fragmentation: not judged.
                                           FragCase{"tiny", {1000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, Severity::ok},
                                           FragCase{"empty", {}, Severity::ok}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(HostFit, KernelIndexesMatchTheirDefinitions) {
  // 1024 order-0 pages and no order>=9 block: fragmentation index = 1000 - (1000 + 1024*1000/512)/1024 = 998.
  auto f = judge_fragmentation({NodeBuddy{0, {1024, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}}, 4096, FragPolicy{});
  EXPECT_EQ(f[0].fragmentation_index, 998);
  EXPECT_EQ(f[0].unusable_index, 1000);
  auto g = judge_fragmentation({NodeBuddy{0, k_healthy}}, 4096, FragPolicy{});
  EXPECT_EQ(g[0].fragmentation_index, -1000);
  EXPECT_LT(g[0].unusable_index, 100);
}

TEST(Preflight, FragmentedNodeRefusesEvenWithEnoughRam) {
  test::FixtureRoot root;
  host(root, 20 * k_gib, zone_line(0, "Normal", k_healthy) + zone_line(1, "Normal", k_shattered));
  PreflightRequest req;
  req.bytes = 4 * k_gib;
  req.page_size = 4096;
  auto rep = run_preflight(root.paths(), req);
  EXPECT_EQ(rep.verdict, Verdict::refused);
  ASSERT_EQ(rep.refusals.size(), 1u);
  EXPECT_NE(rep.refusals[0].find("node 1"), std::string::npos);
  EXPECT_NE(rep.refusals[0].find("--compact"), std::string::npos);
  EXPECT_TRUE(rep.ram.fits);
}

TEST(Preflight, PartialFragmentationWarnsOnly) {
  test::FixtureRoot root;
  host(root, 20 * k_gib, zone_line(0, "Normal", k_partial));
  PreflightRequest req;
  req.bytes = 4 * k_gib;
  req.page_size = 4096;
  auto rep = run_preflight(root.paths(), req);
  EXPECT_EQ(rep.verdict, Verdict::go);
  ASSERT_EQ(rep.warnings.size(), 1u);
}

TEST(Preflight, CompactWritesTheSysctlAndChecksAgain) {
  test::FixtureRoot root;
  host(root, 20 * k_gib, zone_line(0, "Normal", k_shattered));
  root.write("proc/sys/vm/compact_memory", "");
  PreflightRequest req;
  req.bytes = 4 * k_gib;
  req.page_size = 4096;
  req.compact = true;
  auto rep = run_preflight(root.paths(), req);
  EXPECT_EQ(root.read("proc/sys/vm/compact_memory"), "1");
  EXPECT_TRUE(rep.compacted);
  EXPECT_EQ(rep.frag_before_compact.size(), 1u);
  // The fixture does not change on compaction: still refused, and said so.
  EXPECT_EQ(rep.verdict, Verdict::refused);
  EXPECT_NE(rep.refusals[0].find("even after compaction"), std::string::npos);
}

TEST(Preflight, CompactFailureIsAWarningNotASilentPass) {
  test::FixtureRoot root;
  host(root, 20 * k_gib, zone_line(0, "Normal", k_shattered));
  PreflightRequest req;
  req.bytes = 4 * k_gib;
  req.page_size = 4096;
  req.compact = true;
  auto rep = run_preflight(root.paths(), req);
  EXPECT_FALSE(rep.compacted);
  EXPECT_EQ(rep.verdict, Verdict::refused);
  ASSERT_FALSE(rep.warnings.empty());
  EXPECT_NE(rep.warnings[0].find("compact"), std::string::npos);
}

TEST(Preflight, RefusalNamesLargestProcessesAndCgroups) {
  test::FixtureRoot root;
  host(root, 8 * k_gib, zone_line(0, "Normal", k_healthy));
  root.write("proc/100/status", "Name:\tllama-server\nVmRSS:\t 9000000 kB\n");
  root.write("proc/200/status", "Name:\tsshd\nVmRSS:\t 5000 kB\n");
  root.write("proc/300/status", "Name:\tkthreadd\n");
  root.write("sys/fs/cgroup/cgroup.controllers", "cpu memory io\n");
  root.write("sys/fs/cgroup/system.slice/memory.current", "1000\n");
  root.write("sys/fs/cgroup/system.slice/llama.service/memory.current", "9216000000\n");
  PreflightRequest req;
  req.bytes = 17'400'000'000ull;
  req.page_size = 4096;
  auto rep = run_preflight(root.paths(), req);
  ASSERT_EQ(rep.verdict, Verdict::refused);
  ASSERT_EQ(rep.processes.size(), 2u);
  EXPECT_EQ(rep.processes[0].name, "pid 100 (llama-server)");
  EXPECT_EQ(rep.processes[0].bytes, 9000000ull * 1024);
  ASSERT_EQ(rep.cgroups.size(), 2u);
  EXPECT_EQ(rep.cgroups[0].name, "/system.slice/llama.service");
  auto j = rep.to_json();
  EXPECT_EQ(j["holders"]["processes"][0]["name"], "pid 100 (llama-server)");
}

TEST(Preflight, CgroupV1MemoryHierarchy) {
  test::FixtureRoot root;
  root.write("sys/fs/cgroup/memory/memory.usage_in_bytes", "99999\n");
  root.write("sys/fs/cgroup/memory/a/memory.usage_in_bytes", "500\n");
  root.write("sys/fs/cgroup/memory/b/memory.usage_in_bytes", "700\n");
  auto v = largest_cgroups(root.paths(), 5);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].name, "/b");
}

TEST(Preflight, MissingMeminfoIsUndecided) {
  test::FixtureRoot root;
  PreflightRequest req;
  req.bytes = k_gib;
  EXPECT_EQ(run_preflight(root.paths(), req).verdict, Verdict::undecided);
}

TEST(ModelFiles, SumsFilesDirectoriesAndGlobsOnce) {
  test::FixtureRoot root;
  root.write("m/model-00001-of-00002.safetensors", std::string(1000, 'a'));
  root.write("m/model-00002-of-00002.safetensors", std::string(500, 'b'));
  root.write("m/config.json", std::string(7, 'c'));
  root.write("g/q4.gguf", std::string(300, 'd'));
  root.write("other/readme", std::string(11, 'e'));
  auto dir = model_files({(root.root() / "m").string()});
  ASSERT_TRUE(dir.ok()) << dir.error().what();
  EXPECT_EQ(dir->bytes, 1500u);  // weights only
  auto mixed = model_files(
      {(root.root() / "m/*.safetensors").string(), (root.root() / "m").string(), (root.root() / "g/q4.gguf").string()});
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->bytes, 1800u);  // each file once
  EXPECT_EQ(model_files({(root.root() / "other").string()})->bytes, 11u);
  EXPECT_EQ(model_files({(root.root() / "nothing*.gguf").string()}).error().code().value(), EINVAL);
  EXPECT_FALSE(model_files({(root.root() / "absent").string()}).ok());
}

TEST(PreflightCli, ExitCodesGoRefusedUndecidedAndBadInput) {
  test::FixtureRoot root;
  host(root, 18 * k_gib, zone_line(0, "Normal", k_healthy));
  std::string r = "--root=" + root.root().string();
  auto go = test::run_spark_tune({r, "preflight", "--bytes", "17400000000", "--factor", "0.9", "--json"});
  EXPECT_EQ(go.exit_code, 0) << go.out;
  EXPECT_EQ(nlohmann::json::parse(go.out)["verdict"], "go");
  auto no = test::run_spark_tune({r, "preflight", "--bytes", "17400000000", "--json"});
  EXPECT_EQ(no.exit_code, 1) << no.out;
  auto j = nlohmann::json::parse(no.out);
  EXPECT_EQ(j["verdict"], "refused");
  EXPECT_GT(j["host"]["missing"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["request"]["bytes"].get<uint64_t>(), 17400000000ull);
  EXPECT_DOUBLE_EQ(j["request"]["factor"].get<double>(), 1.1);
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--bytes", "lots"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({r, "preflight"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--bytes", "1G", "--gpu", "0"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--bytes", "1G", "--factor", "-1"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--model", (root.root() / "none.gguf").string()}).exit_code, 2);
  root.write("proc/meminfo", "garbage\n");
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--bytes", "1G"}).exit_code, 2);
}

// The [preflight] defaults: --factor/--headroom win, else --profile NAME's table, else the applied
// profile's (recorded in the journal at apply), else 1.1 and 1 GiB. 17.4 GB at 18 GiB available
// fits only with the no-pinned-memory factor 0.9.
class PreflightDefaults : public ::testing::Test {
 protected:
  void SetUp() override {
    host(root, 18 * k_gib, zone_line(0, "Normal", k_healthy));
    root.write("proc/sys/vm/swappiness", "60\n");
    root.write("etc/spark-tune/profiles/nopin.toml",
               "[sysctl]\nvm.swappiness = 10\n[preflight]\nfactor = 0.9\nheadroom = \"512M\"\n");
    root.write("etc/spark-tune/profiles/child.toml",
               "[profile]\ninherit = \"nopin\"\n[preflight]\nheadroom = \"2G\"\n");
    root.write("etc/spark-tune/profiles/bad.toml", "[preflight]\nfactor = \"lots\"\n");
  }
  nlohmann::json preflight(std::vector<std::string> extra, int want_rc) {
    std::vector<std::string> args = {"--root=" + root.root().string(), "preflight", "--bytes", "17400000000", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = test::run_spark_tune(args);
    EXPECT_EQ(r.exit_code, want_rc) << r.out;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json::object() : j["request"];
  }
  test::FixtureRoot root;
};

TEST_F(PreflightDefaults, ProfileOptionsNamedAppliedOrNone) {
  auto none = profile_options(root.paths(), std::nullopt);
  ASSERT_TRUE(none.ok()) << none.error().what();
  EXPECT_EQ(none->describe(), "built-in defaults");
  EXPECT_FALSE(none->get("preflight.factor"));
  auto child = profile_options(root.paths(), std::string("child"));
  ASSERT_TRUE(child.ok()) << child.error().what();
  EXPECT_EQ(child->get("preflight.factor").value_or(""), "0.9");   // inherited
  EXPECT_EQ(child->get("preflight.headroom").value_or(""), "2G");  // the child wins
  EXPECT_FALSE(profile_options(root.paths(), std::string("absent")).ok());
  // Applied through a journal of an earlier version (no options recorded): reloaded by name.
  HostActuator act(root.paths());
  Tuner tuner(root.paths(), act);
  ApplyOptions opts;
  opts.owner_state = {{"name", "child"}};
  ASSERT_TRUE(tuner.apply(k_profile_owner, {}, opts).ok());
  auto applied = profile_options(root.paths(), std::nullopt);
  ASSERT_TRUE(applied.ok()) << applied.error().what();
  EXPECT_EQ(applied->describe(), "profile 'child' (applied)");
  EXPECT_EQ(applied->get("preflight.headroom").value_or(""), "2G");
}

TEST_F(PreflightDefaults, FlagsWinOverTheNamedProfileWhichWinsOverBuiltIns) {
  auto builtin = preflight({}, 1);
  EXPECT_DOUBLE_EQ(builtin["factor"].get<double>(), 1.1);
  EXPECT_EQ(builtin["headroom"].get<uint64_t>(), k_gib);
  EXPECT_EQ(builtin["limits_from"], "built-in defaults");

  auto named = preflight({"--profile", "nopin"}, 0);
  EXPECT_DOUBLE_EQ(named["factor"].get<double>(), 0.9);
  EXPECT_EQ(named["headroom"].get<uint64_t>(), 512ull << 20);
  EXPECT_EQ(named["limits_from"], "profile 'nopin'");

  auto inherited = preflight({"--profile", "child"}, 0);
  EXPECT_DOUBLE_EQ(inherited["factor"].get<double>(), 0.9);
  EXPECT_EQ(inherited["headroom"].get<uint64_t>(), 2 * k_gib);

  auto flag = preflight({"--profile", "nopin", "--factor", "1.1"}, 1);
  EXPECT_DOUBLE_EQ(flag["factor"].get<double>(), 1.1);
  EXPECT_EQ(flag["headroom"].get<uint64_t>(), 512ull << 20);
  EXPECT_EQ(flag["limits_from"], "factor --factor, headroom profile 'nopin'");

  // 17.4 GB x 0.9 + 4 GiB = 19.95 GB > 18 GiB available.
  auto both = preflight({"--profile", "nopin", "--factor", "0.9", "--headroom", "4G"}, 1);
  EXPECT_EQ(both["headroom"].get<uint64_t>(), 4 * k_gib);
  EXPECT_EQ(both["limits_from"], "factor --factor, headroom --headroom");

  std::string r = "--root=" + root.root().string();
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--bytes", "1G", "--profile", "absent"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--bytes", "1G", "--profile", "bad"}).exit_code,
            2);  // factor = "lots"
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--bytes", "1G", "--factor", "abc"}).exit_code, 2);
}

TEST_F(PreflightDefaults, TheAppliedProfileGivesTheDefaults) {
  std::string r = "--root=" + root.root().string();
  auto applied = test::run_spark_tune({r, "apply", "nopin"});
  ASSERT_EQ(applied.exit_code, 0) << applied.out;
  auto req = preflight({}, 0);
  EXPECT_DOUBLE_EQ(req["factor"].get<double>(), 0.9);
  EXPECT_EQ(req["headroom"].get<uint64_t>(), 512ull << 20);
  EXPECT_EQ(req["limits_from"], "profile 'nopin' (applied)");
  // --profile still names another; flags still win.
  EXPECT_EQ(preflight({"--profile", "child"}, 0)["headroom"].get<uint64_t>(), 2 * k_gib);
  EXPECT_DOUBLE_EQ(preflight({"--factor", "1.1"}, 1)["factor"].get<double>(), 1.1);
  ASSERT_EQ(test::run_spark_tune({r, "revert"}).exit_code, 0);
  EXPECT_EQ(preflight({}, 1)["limits_from"], "built-in defaults");
}

}  // namespace
}  // namespace spark
