// preflight and doctor on the real kernel of this machine.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>

#include "doctor/doctor.h"
#include "gpu/preflight.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "telemetry/host_fit.h"
#include "tune/trigger.h"

using spark::tune::HostActuator, spark::tune::compact_memory;

using spark::telemetry::read_node_buddy;

using spark::gpu::PreflightRequest, spark::gpu::Verdict, spark::gpu::run_preflight;

namespace spark {
namespace {

TEST(RealHost, PreflightDecidesFromThisKernel) {
  auto host = read_meminfo(HostPaths::system());
  ASSERT_TRUE(host.ok()) << host.error().what();
  PreflightRequest fits;
  fits.bytes = host->available() / 4;
  auto go = run_preflight(HostPaths::system(), fits);
  ASSERT_NE(go.verdict, Verdict::undecided) << go.undecided;
  ASSERT_FALSE(go.frag.empty());
  if (go.verdict == Verdict::refused) {
    for (const auto& r : go.refusals)
      EXPECT_EQ(r.find("host RAM"), std::string::npos) << r;  // only fragmentation may refuse
  }
  PreflightRequest too_big;
  too_big.bytes = host->total() * 2;
  auto no = run_preflight(HostPaths::system(), too_big);
  EXPECT_EQ(no.verdict, Verdict::refused);
  EXPECT_FALSE(no.processes.empty());  // names who holds memory
  auto cli = test::run_spark_tune({"preflight", "--bytes", std::to_string(too_big.bytes), "--json"});
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_EQ(nlohmann::json::parse(cli.out)["verdict"], "refused");
}

TEST(RealHost, CompactionRunsAndBuddyinfoIsReadable) {
  if (!test::is_root()) GTEST_SKIP() << "writing vm.compact_memory needs root";
  auto t0 = std::chrono::steady_clock::now();
  HostActuator act(HostPaths::system());
  auto r = compact_memory(act, "test", "compaction on the real kernel");
  ASSERT_TRUE(r.ok()) << r.error().what();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  auto nodes = read_node_buddy(HostPaths::system());
  ASSERT_TRUE(nodes.ok());
  RecordProperty("compact_ms", static_cast<int>(ms));
}

TEST(RealHost, DoctorRunsEveryCheck) {
  doctor::Env env;
  auto findings = doctor::run_checks(env, {});
  ASSERT_TRUE(findings.ok()) << findings.error().what();
  std::set<std::string> seen;
  for (const auto& f : *findings) {
    seen.insert(f.check);
    if (f.status != doctor::Status::ok) {
      EXPECT_FALSE(f.fix.empty()) << f.check << ": " << f.message;
    }
  }
  EXPECT_EQ(seen.size(), doctor::checks().size());
  auto cli = test::run_spark_tune({"doctor", "--json"});
  ASSERT_NE(cli.exit_code, 2) << cli.out;
  auto j = nlohmann::json::parse(cli.out);
  EXPECT_EQ(cli.exit_code == 0, j["ok"].get<bool>());
  EXPECT_EQ(j["ok"].get<bool>(), !doctor::any_fail(*findings));
}

}  // namespace
}  // namespace spark
