// Per-GPU fit and the settle wait through the real dlopen path, against the fake NVML in tests/fake_nvml.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/proc_stat.h"
#include "gpu/gpu_probe.h"
#include "gpu/preflight.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"

using spark::gpu::Nvml, spark::gpu::PreflightRequest, spark::gpu::Verdict, spark::gpu::recent_gpu_kill,
    spark::gpu::run_preflight, spark::gpu::samples_agree;

namespace spark {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
constexpr uint64_t k_gib = 1ull << 30;

// Sets FAKE_NVML_* for one test and clears them after.
class FakeEnv {
 public:
  FakeEnv(std::initializer_list<std::pair<const char*, std::string>> vars) {
    for (const auto& [k, v] : vars) {
      ::setenv(k, v.c_str(), 1);
      names_.push_back(k);
    }
  }
  ~FakeEnv() {
    for (auto* n : names_) ::unsetenv(n);
  }

 private:
  std::vector<const char*> names_;
};

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    root_.meminfo(24 * k_gib / 1024, 20 * k_gib / 1024);
    root_.write("proc/buddyinfo", "Node 0, zone Normal 10 10 10 10 10 10 10 10 10 10 1000\n");
  }
  PreflightRequest request(std::vector<unsigned> gpus, uint64_t gpu_bytes) {
    PreflightRequest r;
    r.bytes = k_gib;
    r.page_size = 4096;
    r.gpus = std::move(gpus);
    r.gpu_bytes = gpu_bytes;
    r.nvml_library = FAKE_NVML_LIB;
    return r;
  }
  test::FixtureRoot root_;
};

TEST_F(Gpu, AbsentLibraryMeansNoDriverAndTheCheckIsSkipped) {
  auto n = Nvml::open((root_.root() / "libnvidia-ml.so.1").string());
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.error().code().value(), ENOENT);
  auto req = request({0}, 10 * k_gib);
  req.nvml_library = (root_.root() / "libnvidia-ml.so.1").string();
  auto rep = run_preflight(root_.paths(), req);
  EXPECT_EQ(rep.verdict, Verdict::go);
  EXPECT_FALSE(rep.gpu_checked);
  ASSERT_EQ(rep.notes.size(), 1u);
  EXPECT_NE(rep.notes[0].find("skipped"), std::string::npos);
}

TEST_F(Gpu, ReadsTwoDevicesThroughDlopen) {
  FakeEnv env{};
  auto n = Nvml::open(FAKE_NVML_LIB);
  ASSERT_TRUE(n.ok()) << n.error().what();
  EXPECT_EQ(*(*n)->device_count(), 2u);
  auto m = (*n)->memory(1);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->free, 4096ull << 20);
  EXPECT_EQ(m->total, 24576ull << 20);
  EXPECT_EQ(m->name, "Fake GPU 1");
  EXPECT_FALSE(m->unified);
  EXPECT_FALSE((*n)->memory(2).ok());
}

// A router that pooled two cards co-loaded two models on one card: each device must hold its need alone.
TEST_F(Gpu, FitIsPerDeviceNeverTheSum) {
  FakeEnv env{};
  EXPECT_EQ(run_preflight(root_.paths(), request({0}, 10 * k_gib)).verdict, Verdict::go);
  auto one = run_preflight(root_.paths(), request({1}, 10 * k_gib));
  EXPECT_EQ(one.verdict, Verdict::refused);  // 20 + 4 GiB free in sum, but GPU 1 has 4
  auto both = run_preflight(root_.paths(), request({0, 1}, 10 * k_gib));
  ASSERT_EQ(both.verdict, Verdict::refused);
  ASSERT_EQ(both.refusals.size(), 1u);
  EXPECT_NE(both.refusals[0].find("GPU 1"), std::string::npos);
  EXPECT_NE(both.refusals[0].find("6.0 GiB missing"), std::string::npos) << both.refusals[0];
  ASSERT_EQ(both.gpus.size(), 2u);
  EXPECT_TRUE(both.gpus[0].fits);
  EXPECT_FALSE(both.gpus[1].fits);
}

TEST_F(Gpu, ProcessListGrowsItsBuffer) {
  std::string procs;
  for (int i = 0; i < 16; ++i) procs += (i ? "," : "") + std::string("0:") + std::to_string(1000 + i) + ":64";
  FakeEnv env{{"FAKE_NVML_PROCS", procs}, {"FAKE_NVML_RAMP", "0:1024:60000"}};  // + the dead holder: 17 entries
  auto n = Nvml::open(FAKE_NVML_LIB);
  ASSERT_TRUE(n.ok());
  auto p = (*n)->processes(0);
  ASSERT_TRUE(p.ok()) << p.error().what();
  ASSERT_EQ(p->size(), 17u);
  EXPECT_EQ((*p)[0].pid, 2147483000);
  EXPECT_EQ((*p)[1].used, 64ull << 20);
  EXPECT_TRUE((*n)->processes(1)->empty());
}

TEST_F(Gpu, UnknownDeviceIsUndecided) {
  FakeEnv env{};
  auto rep = run_preflight(root_.paths(), request({5}, k_gib));
  EXPECT_EQ(rep.verdict, Verdict::undecided);
  EXPECT_NE(rep.undecided.find("GPU 5 does not exist"), std::string::npos) << rep.undecided;
}

TEST_F(Gpu, FailingProbeIsUndecided) {
  {
    FakeEnv env{{"FAKE_NVML_MODE", "fail_init"}};
    auto rep = run_preflight(root_.paths(), request({0}, k_gib));
    EXPECT_EQ(rep.verdict, Verdict::undecided);
    EXPECT_NE(rep.undecided.find("Driver Not Loaded"), std::string::npos) << rep.undecided;
  }
  {
    FakeEnv env{{"FAKE_NVML_MODE", "fail_memory"}};
    auto req = request({0}, k_gib);
    req.settle = true;
    auto rep = run_preflight(root_.paths(), req);
    EXPECT_EQ(rep.verdict, Verdict::undecided);
    EXPECT_FALSE(rep.settle.has_value());  // settle costs nothing when the probe fails
  }
}

TEST_F(Gpu, UnifiedMemoryIsAccountedAgainstHostRam) {
  FakeEnv env{{"FAKE_NVML_MODE", "unified"}, {"FAKE_NVML_FREE_MIB", "0"}};
  auto fits = run_preflight(root_.paths(), request({0}, 10 * k_gib));
  EXPECT_EQ(fits.verdict, Verdict::go) << fits.to_text();
  ASSERT_EQ(fits.gpus.size(), 1u);
  EXPECT_TRUE(fits.gpus[0].unified);
  EXPECT_EQ(fits.ram.need, 11 * k_gib);  // the larger of model x factor and the GPU's need, plus headroom
  auto big = run_preflight(root_.paths(), request({0}, 20 * k_gib));  // 20 + 1 GiB > 20 GiB available
  EXPECT_EQ(big.verdict, Verdict::refused);
  EXPECT_NE(big.refusals[0].find("host RAM"), std::string::npos);
}

// After a kill the driver frees asynchronously: without settle the load is mis-planned; with it,
// free memory is read once it stops growing.
TEST_F(Gpu, SettleWaitsForMemoryFreedByAKilledHolder) {
  FakeEnv env{{"FAKE_NVML_FREE_MIB", "8192"}, {"FAKE_NVML_RAMP", "0:8192:600"}};
  auto hasty = run_preflight(root_.paths(), request({0}, 12 * k_gib));
  EXPECT_EQ(hasty.verdict, Verdict::refused);
  auto req = request({0}, 12 * k_gib);
  req.settle = true;
  auto rep = run_preflight(root_.paths(), req);
  EXPECT_EQ(rep.verdict, Verdict::go) << rep.to_text();
  ASSERT_TRUE(rep.settle.has_value());
  EXPECT_TRUE(rep.settle->waited);
  EXPECT_TRUE(rep.settle->settled);
  EXPECT_GE(rep.settle->samples, 3);
  EXPECT_GE(rep.settle->elapsed, 600ms);
  EXPECT_LT(rep.settle->elapsed, 2000ms);
  EXPECT_NE(rep.kill.why.find("has exited"), std::string::npos) << rep.kill.why;
  EXPECT_GE(rep.gpus[0].free, (16ull << 30) - (256ull << 20));
}

// What the real driver does: the killed holder stays listed with all its memory, then everything comes
// back in one step. Two early samples agree, but the device is not settled while the dead holder is listed.
TEST_F(Gpu, SettleWaitsWhileAnExitedHolderIsStillCharged) {
  FakeEnv env{{"FAKE_NVML_FREE_MIB", "8192"}, {"FAKE_NVML_STEP", "0:8192:400"}};
  auto req = request({0}, 12 * k_gib);
  req.settle = true;
  auto rep = run_preflight(root_.paths(), req);
  EXPECT_EQ(rep.verdict, Verdict::go) << rep.to_text();
  ASSERT_TRUE(rep.settle.has_value());
  EXPECT_TRUE(rep.settle->settled);
  EXPECT_GE(rep.settle->elapsed, 400ms);
  EXPECT_EQ(rep.gpus[0].free, 16ull << 30);
}

TEST_F(Gpu, ExitingProcessCountsAsExited) {
  root_.write("proc/88/stat", "88 (python3) R 1 88 88 0 -1 4194628 0 0\n");  // PF_EXITING (0x4) set
  EXPECT_FALSE(process_alive(root_.paths(), 88));
  root_.write("proc/88/stat", "88 (python3) R 1 88 88 0 -1 4194624 0 0\n");
  EXPECT_TRUE(process_alive(root_.paths(), 88));
  EXPECT_FALSE(process_alive(root_.paths(), 89));
}

TEST_F(Gpu, SettleCostsNothingWithoutARecentKill) {
  FakeEnv env{{"FAKE_NVML_PROCS", "0:" + std::to_string(::getpid()) + ":1024"}};
  root_.write("proc/" + std::to_string(::getpid()) + "/stat",
              std::to_string(::getpid()) + " (unit_tests) S 1 1 1 0 -1 4194560\n");
  root_.write("proc/vmstat", "nr_free_pages 1\noom_kill 0\n");
  auto req = request({0}, k_gib);
  req.settle = true;
  auto rep = run_preflight(root_.paths(), req);
  EXPECT_EQ(rep.verdict, Verdict::go);
  ASSERT_TRUE(rep.settle.has_value());
  EXPECT_FALSE(rep.settle->waited);
  EXPECT_EQ(rep.settle->samples, 0);
  EXPECT_LT(rep.settle->elapsed, 100ms);
}

TEST_F(Gpu, KillSignals) {
  // A holder NVML still lists but that is gone, or a zombie.
  EXPECT_TRUE(recent_gpu_kill(root_.paths(), {{0, 424242, k_gib}}).recent);
  root_.write("proc/77/stat", "77 (llama (server)) Z 1 2 3\n");
  EXPECT_TRUE(recent_gpu_kill(root_.paths(), {{0, 77, k_gib}}).recent);
  root_.write("proc/77/stat", "77 (llama (server)) S 1 2 3\n");
  EXPECT_FALSE(recent_gpu_kill(root_.paths(), {{0, 77, k_gib}}).recent);
  // The OOM kill counter: with no record any kill since boot counts once, then only a change does.
  root_.write("proc/vmstat", "oom_kill 2\n");
  auto first = recent_gpu_kill(root_.paths(), {});
  EXPECT_TRUE(first.recent);
  EXPECT_NE(first.why.find("since boot"), std::string::npos);
  EXPECT_FALSE(recent_gpu_kill(root_.paths(), {}).recent);
  root_.write("proc/vmstat", "oom_kill 3\n");
  auto changed = recent_gpu_kill(root_.paths(), {});
  EXPECT_TRUE(changed.recent);
  EXPECT_NE(changed.why.find("2 -> 3"), std::string::npos) << changed.why;
}

TEST(SettleRule, TolerancesAreMax256MiBOr2Percent) {
  EXPECT_TRUE(samples_agree(0, 256ull << 20));
  EXPECT_FALSE(samples_agree(0, (256ull << 20) + 1));
  EXPECT_TRUE(samples_agree(78ull << 30, (78ull << 30) - (78ull << 30) / 50));  // 2% of 78 GiB > 256 MiB
  EXPECT_FALSE(samples_agree(78ull << 30, (76ull << 30)));                      // 2 GiB apart > 1.56 GiB
}

// A slow probe (150 ms a query) on memory that never settles: the wait still ends by the bound.
TEST_F(Gpu, SettleBoundHoldsWithASlowProbe) {
  FakeEnv env{{"FAKE_NVML_FREE_MIB", "1024"},
              {"FAKE_NVML_TOTAL_MIB", "1000000"},
              {"FAKE_NVML_RAMP", "0:600000:60000"},  // 10 GiB/s: never two agreeing samples
              {"FAKE_NVML_DELAY_MS", "150"}};
  auto req = request({0}, k_gib);
  req.settle = true;
  req.settle_max = 500ms;
  auto t0 = clock_type::now();
  auto rep = run_preflight(root_.paths(), req);
  auto took = clock_type::now() - t0;
  EXPECT_LT(took, 700ms);  // the bound plus scheduling slack on a loaded CI machine
  ASSERT_TRUE(rep.settle.has_value());
  EXPECT_TRUE(rep.settle->waited);
  EXPECT_FALSE(rep.settle->settled);
  EXPECT_LE(rep.settle->elapsed, 650ms);
  EXPECT_FALSE(rep.warnings.empty());
}

// A probe that hangs (a wedged driver) cannot hold the caller past --settle-max: the real binary.
TEST_F(Gpu, HangingProbeIsBoundedInTheBinary) {
  for (const char* mode : {"hang_init", "hang_memory"}) {
    auto t0 = clock_type::now();
    auto r = test::run_spark_tune(
        {"--root=" + root_.root().string(), "preflight", "--bytes", "1G", "--gpu", "0", "--gpu-bytes", "1G", "--settle",
         "--settle-max", "300ms", "--json"},
        {"SPARK_TUNE_NVML_LIB=" FAKE_NVML_LIB, std::string("FAKE_NVML_MODE=") + mode, "FAKE_NVML_HANG_MS=5000"});
    auto took = clock_type::now() - t0;
    EXPECT_EQ(r.exit_code, 2) << mode << ": " << r.out;
    EXPECT_LT(took, 800ms) << mode;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_NE(j["undecided"].get<std::string>().find("did not answer in time"), std::string::npos) << r.out;
  }
}

TEST_F(Gpu, BinaryUsesTheLibraryFromTheEnvironment) {
  std::string r = "--root=" + root_.root().string();
  std::vector<std::string> env = {"SPARK_TUNE_NVML_LIB=" FAKE_NVML_LIB};
  auto go = test::run_spark_tune({r, "preflight", "--bytes", "1G", "--gpu", "0", "--gpu-bytes", "10G", "--json"}, env);
  EXPECT_EQ(go.exit_code, 0) << go.out;
  auto j = nlohmann::json::parse(go.out);
  EXPECT_EQ(j["gpus"][0]["name"], "Fake GPU 0");
  auto no =
      test::run_spark_tune({r, "preflight", "--bytes", "1G", "--gpu", "0,1", "--gpu-bytes", "10G", "--json"}, env);
  EXPECT_EQ(no.exit_code, 1) << no.out;
  EXPECT_EQ(test::run_spark_tune({r, "preflight", "--bytes", "1G", "--gpu", "0,x", "--gpu-bytes", "1G"}, env).exit_code,
            2);
}

}  // namespace
}  // namespace spark
