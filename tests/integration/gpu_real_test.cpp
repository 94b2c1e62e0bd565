// preflight and the settle wait against the real NVIDIA driver; skipped where there is none.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "gpu/nvml.h"
#include "gpu/preflight.h"
#include "support/run_spark_tune.h"

using spark::gpu::Nvml, spark::gpu::PreflightRequest, spark::gpu::Verdict, spark::gpu::run_preflight;

namespace spark {
namespace {

using namespace std::chrono_literals;

TEST(RealGpu, PreflightAndSettleAgainstTheDriver) {
  auto t0 = std::chrono::steady_clock::now();
  auto nvml = Nvml::open();
  if (!nvml && nvml.error().code().value() == ENOENT) GTEST_SKIP() << "no NVIDIA driver: " << nvml.error().what();
  ASSERT_TRUE(nvml.ok()) << nvml.error().what();
  auto cold = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(cold, 5s);
  auto count = (*nvml)->device_count();
  ASSERT_TRUE(count.ok()) << count.error().what();
  ASSERT_GE(*count, 1u);
  auto mem = (*nvml)->memory(0);
  ASSERT_TRUE(mem.ok()) << mem.error().what();
  if (!mem->unified) {
    EXPECT_GT(mem->total, 0u);
    EXPECT_LE(mem->free, mem->total);
  }
  PreflightRequest req;
  req.bytes = 1ull << 30;
  req.gpus = {0};
  req.gpu_bytes = 1ull << 30;
  req.settle = true;
  req.settle_force = true;  // measure the wait itself
  auto rep = run_preflight(HostPaths::system(), req);
  ASSERT_NE(rep.verdict, Verdict::undecided) << rep.undecided;
  ASSERT_TRUE(rep.gpu_checked);
  ASSERT_TRUE(rep.settle.has_value());
  EXPECT_LE(rep.settle->elapsed, req.settle_max + 200ms);
  if (!mem->unified) {
    EXPECT_TRUE(rep.settle->settled) << rep.to_text();  // an idle GPU settles in two samples
  }
  RecordProperty("settle_ms", static_cast<int>(rep.settle->elapsed.count()));
  auto cli =
      test::run_spark_tune({"preflight", "--bytes", "1G", "--gpu", "0", "--gpu-bytes", "1G", "--settle", "--json"});
  EXPECT_NE(cli.exit_code, 2) << cli.out;
  auto j = nlohmann::json::parse(cli.out);
  EXPECT_EQ(j["gpus"].size(), 1u);
}

}  // namespace
}  // namespace spark
