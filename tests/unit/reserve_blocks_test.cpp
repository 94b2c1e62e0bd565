// Issue 14 part 4: what the load-window overlay reserves (zoneinfo watermarks) and
// `preflight --blocks COUNTxSIZE` on fixture buddyinfo (fresh boot, after days, after compaction).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "telemetry/free_blocks.h"
#include "telemetry/reserve.h"

using spark::state::Target, spark::state::sysctl_target;

using spark::tune::Actuator, spark::tune::Change;

using spark::telemetry::BlocksVerdict, spark::telemetry::OverlayReserve, spark::telemetry::check_blocks,
    spark::telemetry::count_free_blocks, spark::telemetry::overlay_reserve, spark::telemetry::parse_blocks,
    spark::telemetry::parse_buddyinfo, spark::telemetry::parse_zoneinfo, spark::telemetry::watermarks_for;

namespace spark {
namespace {

constexpr uint64_t k_page = 4096;

std::string fixture_text(const std::string& name) {
  std::ifstream in(std::string(SPARK_TUNE_TEST_FIXTURES) + "/" + name);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(OverlayReserve, WatermarksAsTheKernelComputesThem) {
  // Captured on the 24 GiB VM with vm.min_free_kbytes 67584 and watermark_scale_factor 10: the
  // kernel's own min/low/high must come back from managed pages alone.
  auto zones = parse_zoneinfo(fixture_text("zoneinfo/vm-24g-1node.zoneinfo"));
  ASSERT_TRUE(zones) << zones.error().what();
  ASSERT_GE(zones->size(), 3u);
  auto computed = watermarks_for(*zones, 67584, 10, k_page);
  size_t checked = 0;
  for (size_t i = 0; i < zones->size(); ++i) {
    if ((*zones)[i].managed == 0) continue;
    EXPECT_EQ(computed[i].min, (*zones)[i].min) << (*zones)[i].zone;
    EXPECT_EQ(computed[i].low, (*zones)[i].low) << (*zones)[i].zone;
    EXPECT_EQ(computed[i].high, (*zones)[i].high) << (*zones)[i].zone;
    ++checked;
  }
  EXPECT_EQ(checked, 3u);
}

TEST(OverlayReserve, LoadWindowOverlayTakesMoreThanItsReserve) {
  auto zones = parse_zoneinfo(fixture_text("zoneinfo/vm-24g-1node.zoneinfo"));
  auto mem = parse_meminfo(fixture_text("zoneinfo/vm-24g-1node.meminfo"));
  ASSERT_TRUE(zones && mem);
  // load-window on 24 GiB: 2% of RAM (480 MiB) and watermark_scale_factor 200.
  auto r = overlay_reserve(*zones, *mem, 67584, 491520, 10, 200, k_page);
  EXPECT_GT(r.reserve_under, r.reserve_now);
  // min rises by ~414 MiB, the gaps by 2% of each zone: high rises by well over 1 GiB.
  EXPECT_GT(r.reserve_increase(), 1024ull << 20);
  EXPECT_GE(r.takes(), r.reserve_increase());
  EXPECT_EQ(r.available_now, mem->available());
  EXPECT_EQ(r.available_under, r.available_now - r.takes());
  auto j = r.to_json();
  EXPECT_EQ(j["takes_bytes"], r.takes());
  EXPECT_NE(r.to_text().find("MemAvailable"), std::string::npos);
  // An overlay that changes nothing takes nothing.
  auto same = overlay_reserve(*zones, *mem, 67584, 67584, 10, 10, k_page);
  EXPECT_EQ(same.takes(), 0u);
}

TEST(OverlayReserve, FromTheHostTree) {
  test::FixtureRoot root;
  copy_fixture(root, "zoneinfo/vm-24g-1node.zoneinfo", "proc/zoneinfo");
  copy_fixture(root, "zoneinfo/vm-24g-1node.meminfo", "proc/meminfo");
  root.write("proc/sys/vm/min_free_kbytes", "67584\n");
  root.write("proc/sys/vm/watermark_scale_factor", "10\n");
  std::vector<Change> overlay{{sysctl_target("vm.min_free_kbytes"), "491520", ""},
                              {sysctl_target("vm.dirty_ratio"), "5", ""}};
  auto r = overlay_reserve(root.paths(), overlay, k_page);
  ASSERT_TRUE(r) << r.error().what();
  EXPECT_EQ(r->min_free_kbytes_under, 491520u);
  EXPECT_EQ(r->scale_factor_under, 10u);
  EXPECT_GT(r->takes(), 400ull << 20);
}

TEST(Blocks, ParsesAndRefusesBadInput) {
  auto a = parse_blocks("200x32M", k_page, 14);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->count, 200u);
  EXPECT_EQ(a->order, 13u);
  auto b = parse_blocks("10 x 3M", k_page, 11);  // rounded up to the 4 MiB order
  ASSERT_TRUE(b);
  EXPECT_EQ(b->order, 10u);
  for (const char* bad : {"", "x4M", "200x", "200", "0x4M", "-1x4M", "ax4M", "200x4Q", "200x1k"})
    EXPECT_FALSE(parse_blocks(bad, k_page, 11)) << bad;
  // 32 MiB on x86-64 (11 orders, 4 MiB blocks at most): larger than the largest order.
  auto big = parse_blocks("200x32M", k_page, 11);
  ASSERT_FALSE(big);
  EXPECT_NE(std::string(big.error().what()).find("largest block"), std::string::npos);
}

TEST(Blocks, CountsBlocksAtOrAboveTheOrder) {
  auto buddy = parse_buddyinfo("Node 0, zone Normal 5 4 3 2\n");
  ASSERT_TRUE(buddy);
  EXPECT_EQ(count_free_blocks(*buddy, 3), 2u);
  EXPECT_EQ(count_free_blocks(*buddy, 2), 3u + 4u);
  EXPECT_EQ(count_free_blocks(*buddy, 0), 5u + 8u + 12u + 16u);
}

// Writes the after-compaction buddyinfo into the tree when compaction is asked for.
class CompactingActuator : public Actuator {
 public:
  CompactingActuator(const test::FixtureRoot& root, std::string after) : root_(root), after_(std::move(after)) {}
  Result<std::optional<std::string>> read(const Target&) override { return std::optional<std::string>(); }
  Result<void> write(const Target&, const std::optional<std::string>&) override {
    return sys_error(EPERM, "no writes");
  }
  Result<void> trigger(const Target& t, const std::string& value) override {
    triggers.push_back(t.display() + "=" + value);
    if (!after_.empty()) copy_fixture(root_, after_, "proc/buddyinfo");
    return {};
  }
  std::vector<std::string> triggers;

 private:
  const test::FixtureRoot& root_;
  std::string after_;
};

TEST(Blocks, FreshBootIsGoWithoutCompaction) {
  test::FixtureRoot root;
  copy_fixture(root, "buddyinfo/vm-24g-1node.buddyinfo", "proc/buddyinfo");
  CompactingActuator act(root, "");
  auto ask = parse_blocks("200x4M", k_page, 11);
  ASSERT_TRUE(ask);
  auto r = check_blocks(root.paths(), act, *ask);
  ASSERT_TRUE(r) << r.error().what();
  EXPECT_EQ(r->verdict, BlocksVerdict::go);
  EXPECT_EQ(r->before, 3u + 752u + 82u);
  EXPECT_FALSE(r->after);
  EXPECT_TRUE(act.triggers.empty());
}

TEST(Blocks, AfterDaysCompactionHelps) {
  test::FixtureRoot root;
  copy_fixture(root, "buddyinfo/days-uptime.buddyinfo", "proc/buddyinfo");
  CompactingActuator act(root, "buddyinfo/after-compaction.buddyinfo");
  auto ask = parse_blocks("200x4M", k_page, 11);
  auto r = check_blocks(root.paths(), act, *ask);
  ASSERT_TRUE(r) << r.error().what();
  EXPECT_EQ(r->before, 3u);
  ASSERT_TRUE(r->after);
  EXPECT_EQ(*r->after, 3u + 310u + 512u);
  EXPECT_EQ(r->verdict, BlocksVerdict::compacted);
  ASSERT_EQ(act.triggers.size(), 1u);
  EXPECT_EQ(act.triggers[0], "vm.compact_memory=1");
  EXPECT_EQ(r->to_json()["verdict"], "compacted");
}

TEST(Blocks, AfterDaysCompactionCannotHelpSaysReboot) {
  test::FixtureRoot root;
  copy_fixture(root, "buddyinfo/days-uptime.buddyinfo", "proc/buddyinfo");
  CompactingActuator act(root, "buddyinfo/days-uptime.buddyinfo");  // compaction changed nothing
  auto ask = parse_blocks("200x4M", k_page, 11);
  auto r = check_blocks(root.paths(), act, *ask);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->verdict, BlocksVerdict::reboot);
  EXPECT_EQ(act.triggers.size(), 1u);
  EXPECT_NE(r->to_text().find("reboot"), std::string::npos);
}

TEST(Blocks, CliBadInputExitsTwoAndChangesNothing) {
  test::FixtureRoot root;
  copy_fixture(root, "buddyinfo/days-uptime.buddyinfo", "proc/buddyinfo");
  for (const char* bad : {"lots", "200x64M", "0x4M"}) {
    auto r = test::run_spark_tune({"--root=" + root.root().string(), "preflight", "--blocks", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("--blocks"), std::string::npos) << r.err;
  }
  EXPECT_EQ(root.read("proc/buddyinfo"), fixture_text("buddyinfo/days-uptime.buddyinfo"));
  EXPECT_FALSE(fs::exists(root.root() / "proc/sys/vm/compact_memory"));
}

TEST(Blocks, CliAnswersInJson) {
  test::FixtureRoot root;
  copy_fixture(root, "buddyinfo/vm-24g-1node.buddyinfo", "proc/buddyinfo");
  auto r = test::run_spark_tune({"--root=" + root.root().string(), "preflight", "--blocks", "100x2M", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["verdict"], "go");
  EXPECT_EQ(j["blocks"]["order"], 9);
}

}  // namespace
}  // namespace spark
