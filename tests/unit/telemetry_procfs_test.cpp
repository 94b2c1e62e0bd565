#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/meminfo.h"
#include "support/fixture.h"
#include "telemetry/buddyinfo.h"
#include "telemetry/frag_index.h"
#include "telemetry/psi.h"
#include "telemetry/vmstat.h"

using spark::telemetry::BuddyInfo, spark::telemetry::ContigPageInfo, spark::telemetry::Psi, spark::telemetry::PsiKind,
    spark::telemetry::PsiTrigger, spark::telemetry::VmStat, spark::telemetry::VmStatDelta,
    spark::telemetry::contig_page_info, spark::telemetry::format_extfrag_index_file, spark::telemetry::format_index,
    spark::telemetry::format_unusable_index_file, spark::telemetry::fragmentation_index,
    spark::telemetry::memory_pressure_file, spark::telemetry::parse_buddyinfo, spark::telemetry::parse_psi,
    spark::telemetry::parse_vmstat, spark::telemetry::read_buddyinfo, spark::telemetry::unusable_free_index,
    spark::telemetry::vmstat_delta;

namespace spark {
namespace {

std::string fixture_text(const std::string& name) {
  std::ifstream in(std::string(SPARK_TUNE_TEST_FIXTURES) + "/buddyinfo/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

BuddyInfo fixture_buddyinfo(const std::string& name) {
  auto b = parse_buddyinfo(fixture_text(name));
  EXPECT_TRUE(b.ok()) << (b.ok() ? "" : b.error().what());
  return b.ok() ? *b : BuddyInfo{};
}

TEST(BuddyInfo, ParsesZonesNodesAndOrders) {
  test::FixtureRoot root;
  test::copy_fixture(root, "buddyinfo/ws-512g-2node.buddyinfo", "proc/buddyinfo");
  auto b = read_buddyinfo(root.paths());
  ASSERT_TRUE(b.ok()) << b.error().what();
  ASSERT_EQ(b->zones.size(), 4u);
  EXPECT_EQ(b->orders(), 11u);
  EXPECT_EQ(b->nodes(), (std::vector<int>{0, 1}));
  EXPECT_EQ(b->zones[3].node, 1);
  EXPECT_EQ(b->zones[3].zone, "Normal");
  EXPECT_EQ(b->zones[3].free[0], 410233u);
  EXPECT_EQ(b->zones[3].free_pages(), 2511735u);
  EXPECT_EQ(b->zones[2].free[10], 30511u);
  // Node 0 order 10: DMA 3 + DMA32 742 + Normal 30511; all nodes adds node 1's 0.
  EXPECT_EQ(b->free_blocks(0)[10], 3u + 742u + 30511u);
  EXPECT_EQ(b->free_blocks(1)[10], 0u);
  EXPECT_EQ(b->free_blocks()[0], 1u + 7u + 20411u + 410233u);
  // Pages in blocks of order >= 9 in node 1 Normal: none.
  EXPECT_EQ(b->zones[3].free_pages_at_least(8), 0u);
  EXPECT_EQ(b->zones[3].free_pages_at_least(7), 33u << 7);
}

TEST(BuddyInfo, RejectsMalformedInput) {
  EXPECT_FALSE(parse_buddyinfo("").ok());
  EXPECT_FALSE(parse_buddyinfo("Node 0, zone Normal\n").ok());
  EXPECT_FALSE(parse_buddyinfo("Node x, zone Normal 1 2 3\n").ok());
  EXPECT_FALSE(parse_buddyinfo("Node 0 zone Normal 1 2 3\n").ok());
  EXPECT_FALSE(parse_buddyinfo("Node 0, zone Normal 1 -2 3\n").ok());
  auto mixed = parse_buddyinfo("Node 0, zone DMA 1 2 3\nNode 0, zone Normal 1 2\n");
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(std::string(mixed.error().what()).find("line 2"), std::string::npos);
}

// The kernel's own debugfs output, captured together with the buddyinfo it was computed from.
TEST(FragIndex, MatchesKernelDebugfsOutputByteForByte) {
  BuddyInfo b = fixture_buddyinfo("vm-24g-1node.buddyinfo");
  EXPECT_EQ(format_extfrag_index_file(b), fixture_text("vm-24g-1node.extfrag_index"));
  EXPECT_EQ(format_unusable_index_file(b), fixture_text("vm-24g-1node.unusable_index"));
}

TEST(FragIndex, LargeHostHighOrdersExhausted) {
  BuddyInfo b = fixture_buddyinfo("spark-128g-1node.buddyinfo");
  const auto& normal = b.zones[2].free;
  ContigPageInfo c = contig_page_info(normal, 9);
  EXPECT_EQ(c.free_pages, 5371373u);
  EXPECT_EQ(c.free_blocks_total, 1994890u);
  EXPECT_EQ(c.free_blocks_suitable, 0u);
  EXPECT_EQ(contig_page_info(normal, 5).free_blocks_suitable, 12798u);
  // Order 8 still has blocks: the allocation would succeed.
  EXPECT_EQ(fragmentation_index(normal, 8), -1000);
  // Orders 9 and 10 fail although 20 GiB are free: fragmentation, index near 1.
  EXPECT_EQ(fragmentation_index(normal, 9), 995);
  EXPECT_EQ(fragmentation_index(normal, 10), 998);
  EXPECT_EQ(unusable_free_index(normal, 1), 169);
  EXPECT_EQ(unusable_free_index(normal, 4), 803);
  EXPECT_EQ(unusable_free_index(normal, 8), 999);
  EXPECT_EQ(unusable_free_index(normal, 9), 1000);
  EXPECT_EQ(format_index(fragmentation_index(normal, 9), true), " 0.995");
  EXPECT_EQ(format_index(-1000, true), "-1.000");
  EXPECT_EQ(format_index(-1000), "-1.000");
  EXPECT_EQ(format_index(1000), "1.000");
  EXPECT_EQ(format_index(0, true), " 0.000");
}

TEST(FragIndex, TwoNodeHostPerNode) {
  BuddyInfo b = fixture_buddyinfo("ws-512g-2node.buddyinfo");
  const auto& n1 = b.zones[3].free;
  EXPECT_EQ(fragmentation_index(n1, 7), -1000);
  EXPECT_EQ(fragmentation_index(n1, 8), 990);
  EXPECT_EQ(fragmentation_index(n1, 9), 995);
  EXPECT_EQ(unusable_free_index(n1, 2), 386);
  EXPECT_EQ(unusable_free_index(n1, 7), 998);
  // Node 0 Normal has order-10 blocks: every order succeeds there.
  for (unsigned o = 0; o < 11; ++o) EXPECT_EQ(fragmentation_index(b.zones[2].free, o), -1000) << o;
  std::string file = format_extfrag_index_file(b);
  EXPECT_NE(
      file.find(
          "Node 1, zone   Normal -1.000 -1.000 -1.000 -1.000 -1.000 -1.000 -1.000 -1.000  0.990  0.995  0.998 \n"),
      std::string::npos)
      << file;
}

TEST(FragIndex, SmallHostEmptyZoneAndLackOfMemory) {
  BuddyInfo b = fixture_buddyinfo("small-8g-2node.buddyinfo");
  const auto& empty = b.zones[0].free;
  EXPECT_EQ(fragmentation_index(empty, 3), 0);     // nothing free: 0, like the kernel
  EXPECT_EQ(unusable_free_index(empty, 3), 1000);  // nothing free: all unusable
  const auto& n1 = b.zones[2].free;                // 3644 free pages, 2077 blocks
  EXPECT_EQ(fragmentation_index(n1, 6), -1000);
  EXPECT_EQ(fragmentation_index(n1, 7), 986);  // 1000 - (1000 + 3644000/128) / 2077
  EXPECT_EQ(unusable_free_index(n1, 6), 982);  // (3644 - 64) * 1000 / 3644
  EXPECT_EQ(unusable_free_index(n1, 0), 0);
  // DMA32: 210+190+160+96+48+32 = 736 pages in 361 blocks; order 6 fails for lack of memory
  // more than for fragmentation: 1000 - (1000 + 736000/64) / 361 = 1000 - 12500/361 = 966.
  EXPECT_EQ(fragmentation_index(b.zones[1].free, 6), 966);
  EXPECT_EQ(fragmentation_index(n1, 11), 0);  // beyond the last order, like the kernel's guard
  std::string unusable = format_unusable_index_file(b);
  EXPECT_EQ(unusable.substr(0, 40), "Node 0, zone      DMA 1.000 1.000 1.000 ");
}

TEST(MemInfo, ParsesBytesAndRequiresAvailable) {
  test::FixtureRoot root;
  root.write("proc/meminfo",
             "MemTotal:       24684084 kB\nMemFree:        24005428 kB\nMemAvailable:   24336132 kB\n"
             "Cached:           513620 kB\nDirty:               236 kB\nWriteback:             0 kB\n"
             "AnonPages:          9132 kB\nUnevictable:       12392 kB\nMlocked:           11468 kB\n"
             "HugePages_Total:       4\n");
  auto m = read_meminfo(root.paths());
  ASSERT_TRUE(m.ok()) << m.error().what();
  EXPECT_EQ(m->total(), 24684084ull * 1024);
  EXPECT_EQ(m->available(), 24336132ull * 1024);
  EXPECT_EQ(m->cached(), 513620ull * 1024);
  EXPECT_EQ(m->dirty(), 236ull * 1024);
  EXPECT_EQ(m->mlocked(), 11468ull * 1024);
  EXPECT_EQ(m->value("HugePages_Total"), 4u);
  EXPECT_FALSE(m->get("SwapTotal"));
  EXPECT_FALSE(parse_meminfo("MemTotal: 1 kB\n").ok());
  EXPECT_FALSE(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n").ok());
  EXPECT_FALSE(parse_meminfo("MemTotal: 1 MB\nMemAvailable: 1 kB\n").ok());
}

TEST(VmStat, DeltasRatesAndPrefixSums) {
  auto a = parse_vmstat(
      "nr_free_pages 1000\ncompact_stall 5\nallocstall_normal 2\nallocstall_movable 1\npgsteal_direct 10\n");
  auto b = parse_vmstat(
      "nr_free_pages 900\ncompact_stall 9\nallocstall_normal 6\nallocstall_movable 3\npgsteal_direct 30\noom_kill 1\n");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->sum_prefix("allocstall_"), 3u);
  VmStatDelta d = vmstat_delta(*a, *b, 2.0);
  EXPECT_EQ(d.get("compact_stall"), 4u);
  EXPECT_DOUBLE_EQ(d.rate("compact_stall"), 2.0);
  EXPECT_EQ(d.sum_prefix("allocstall_"), 6u);
  EXPECT_DOUBLE_EQ(d.rate_prefix("allocstall_"), 3.0);
  EXPECT_EQ(d.get("nr_free_pages"), 0u);  // went down: a gauge, not an event
  EXPECT_EQ(d.decreased.at("nr_free_pages"), -100);
  EXPECT_EQ(d.get("oom_kill"), 0u);  // new counter: no baseline, no delta
  EXPECT_FALSE(parse_vmstat("compact_stall five\n").ok());
  EXPECT_FALSE(parse_vmstat("").ok());
}

TEST(Psi, ParsesSomeAndFull) {
  auto p = parse_psi(
      "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\nfull avg10=0.10 avg60=0.00 avg300=0.00 total=789\n");
  ASSERT_TRUE(p.ok()) << p.error().what();
  EXPECT_DOUBLE_EQ(p->some.avg10, 1.5);
  EXPECT_DOUBLE_EQ(p->some.avg60, 0.25);
  EXPECT_EQ(p->some.total_us, 123456u);
  ASSERT_TRUE(p->full);
  EXPECT_EQ(p->full->total_us, 789u);
  auto only_some = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
  ASSERT_TRUE(only_some.ok());
  EXPECT_FALSE(only_some->full);
  EXPECT_FALSE(parse_psi("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").ok());
  EXPECT_FALSE(parse_psi("some avg10=x\n").ok());
}

TEST(Psi, TriggerRejectsBadThresholds) {
  test::FixtureRoot root;
  root.write("proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
  auto f = memory_pressure_file(root.paths());
  EXPECT_FALSE(PsiTrigger::create(f, PsiKind::some, std::chrono::microseconds(0), std::chrono::seconds(1)).ok());
  EXPECT_FALSE(PsiTrigger::create(f, PsiKind::some, std::chrono::seconds(2), std::chrono::seconds(1)).ok());
  // A regular file is not a pressure file: refused, and left as it was.
  auto regular = PsiTrigger::create(f, PsiKind::some, std::chrono::milliseconds(10), std::chrono::seconds(2));
  ASSERT_FALSE(regular.ok());
  EXPECT_EQ(regular.error().code().value(), ENOTSUP);
  EXPECT_EQ(root.read("proc/pressure/memory"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
  EXPECT_FALSE(
      PsiTrigger::create(root.root() / "missing", PsiKind::some, std::chrono::milliseconds(10), std::chrono::seconds(1))
          .ok());
}

}  // namespace
}  // namespace spark
