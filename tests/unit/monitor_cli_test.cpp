// `spark-tune monitor` and `events` against fixture trees (--root), procfs only.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/fixture.h"
#include "support/run_spark_tune.h"

namespace spark {
namespace {

void host_fixture(const test::FixtureRoot& root) {
  root.meminfo(128ull << 20, 60ull << 20);
  test::copy_fixture(root, "buddyinfo/spark-128g-1node.buddyinfo", "proc/buddyinfo");
  root.write("proc/vmstat", "nr_free_pages 100\ncompact_stall 3\nallocstall_normal 1\npgscan_direct 10\noom_kill 0\n");
  root.write("proc/pressure/memory",
             "some avg10=1.25 avg60=0.50 avg300=0.10 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
}

TEST(MonitorCli, JsonLinesFromFixtureTree) {
  test::FixtureRoot root;
  host_fixture(root);
  auto r = test::run_spark_tune(
      {"--root", root.root().string(), "monitor", "--no-bpf", "--json", "--count", "2", "--interval", "100ms"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto nl = r.out.find('\n');
  ASSERT_NE(nl, std::string::npos);
  auto second = r.out.find('\n', nl + 1);
  ASSERT_NE(second, std::string::npos) << "two NDJSON lines expected: " << r.out;
  auto j = nlohmann::json::parse(r.out.substr(0, nl));
  EXPECT_EQ(j["memory"]["available"], 60ull << 30);
  EXPECT_EQ(j["memory"]["total"], 128ull << 30);
  ASSERT_EQ(j["zones"].size(), 3u);
  EXPECT_EQ(j["zones"][2]["zone"], "Normal");
  EXPECT_EQ(j["zones"][2]["free_blocks"][0], 912345);
  EXPECT_DOUBLE_EQ(j["zones"][2]["fragmentation_index"][9].get<double>(), 0.995);
  EXPECT_DOUBLE_EQ(j["zones"][2]["fragmentation_index"][8].get<double>(), -1.0);
  EXPECT_DOUBLE_EQ(j["zones"][2]["unusable_index"][4].get<double>(), 0.803);
  EXPECT_DOUBLE_EQ(j["psi_memory"]["some"]["avg10"].get<double>(), 1.25);
  EXPECT_FALSE(j.contains("bpf"));
  EXPECT_NE(j["probes"].get<std::string>().find("procfs only"), std::string::npos);
  // 60 of 128 GiB available, orders >= 9 gone outside ZONE_DMA: the cudaHostAlloc signature.
  ASSERT_EQ(j["events"].size(), 1u);
  EXPECT_EQ(j["events"][0]["type"], "fragmentation_stall");  // the one event shape (issue 12)
}

TEST(MonitorCli, TerminalViewShowsBarsAndIndices) {
  test::FixtureRoot root;
  host_fixture(root);
  auto r = test::run_spark_tune(
      {"--root", root.root().string(), "monitor", "--no-bpf", "--count", "1", "--interval", "100ms"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("Free memory by order"), std::string::npos);
  EXPECT_NE(r.out.find("\u2588"), std::string::npos);
  EXPECT_NE(r.out.find("Frag index node 0 Normal:  o7 -1.000  o8 -1.000  o9 0.995  o10 0.998"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("fragmentation_stall"), std::string::npos);
}

TEST(MonitorCli, BadInputExitsTwo) {
  test::FixtureRoot root;
  host_fixture(root);
  EXPECT_EQ(
      test::run_spark_tune({"--root", root.root().string(), "monitor", "--no-bpf", "--interval", "soon"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({"--root", root.root().string(), "monitor", "--no-bpf", "--deep", "x"}).exit_code, 2);
  EXPECT_EQ(test::run_spark_tune({"--root", root.root().string(), "events", "--no-bpf", "--timeout", "x"}).exit_code,
            2);
  EXPECT_EQ(test::run_spark_tune({"--root", root.root().string(), "events", "--probe-kinds", "kprobe"}).exit_code, 2);
  // A tree without buddyinfo: a clear error, exit 2.
  test::FixtureRoot empty;
  auto r = test::run_spark_tune({"--root", empty.root().string(), "--json", "monitor", "--no-bpf", "--count", "1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("error"), std::string::npos);
}

TEST(EventsCli, ProcfsOnlyReportsFragmentationFromBuddyinfo) {
  test::FixtureRoot root;
  host_fixture(root);
  auto r = test::run_spark_tune(
      {"--root", root.root().string(), "--json", "events", "--no-bpf", "--count", "1", "--timeout", "5s"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out.substr(0, r.out.find('\n')));
  EXPECT_EQ(j["type"], "fragmentation_stall");  // the one event shape (issue 12)
  EXPECT_EQ(j["source"], "telemetry");
  EXPECT_FALSE(j["hint"].get<std::string>().empty());
}

}  // namespace
}  // namespace spark
