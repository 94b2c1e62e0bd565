// Issue 14 part 3: a guard's host floor on a unified-memory host (fake NVML in unified mode, host
// memory from a fixture meminfo: memory taken outside the guard's cgroup), and doctor's warning
// when such a host guards a server with a cgroup budget only.
#include "guard/host_floor.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "doctor/doctor.h"
#include "gpu/unified.h"
#include "guard/supervisor.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

using spark::tune::HostActuator, spark::tune::Tuner;

using spark::gpu::unified_memory_host;

namespace spark {
namespace {

using namespace std::chrono_literals;
constexpr uint64_t k_gib = 1ull << 30;

struct UnifiedNvml {
  UnifiedNvml() { ::setenv("FAKE_NVML_MODE", "unified", 1); }
  ~UnifiedNvml() { ::unsetenv("FAKE_NVML_MODE"); }
};

TEST(HostFloor, UnifiedHostDetectionThroughNvml) {
  EXPECT_FALSE(unified_memory_host("/nonexistent/libnvidia-ml.so.1"));
  EXPECT_FALSE(unified_memory_host(FAKE_NVML_LIB));  // two discrete devices
  UnifiedNvml u;
  EXPECT_TRUE(unified_memory_host(FAKE_NVML_LIB));
}

TEST(HostFloor, DefaultOnUnifiedHostsOnly) {
  MemInfo host = MemInfo::of(128 * k_gib, 60 * k_gib, 40 * k_gib);
  auto yes = [] { return true; };
  auto no = [] { return false; };
  EXPECT_EQ(*guard::resolve_host_floor("", std::nullopt, host, no), 0u);
  EXPECT_EQ(*guard::resolve_host_floor("", std::nullopt, host, yes), static_cast<uint64_t>(128 * k_gib * 0.05));
  EXPECT_EQ(*guard::resolve_host_floor("", std::string("8G"), host, yes), 8 * k_gib);
  EXPECT_EQ(*guard::resolve_host_floor("off", std::nullopt, host, yes), 0u);
  EXPECT_EQ(*guard::resolve_host_floor("4G", std::nullopt, host, no), 4 * k_gib);  // asked: held anywhere
  EXPECT_FALSE(guard::resolve_host_floor("-4G", std::nullopt, host, yes));
  EXPECT_FALSE(guard::resolve_host_floor("200G", std::nullopt, host, yes));
  EXPECT_FALSE(guard::resolve_host_floor("", std::string("lots"), host, yes));
}

TEST(HostFloor, ProfileDefaultFromTheHostTree) {
  test::FixtureRoot root;
  root.meminfo(128 * k_gib / 1024, 60 * k_gib / 1024);
  ::setenv("SPARK_TUNE_NVML_LIB", FAKE_NVML_LIB, 1);
  {
    UnifiedNvml u;
    auto f = guard::resolve_host_floor(root.paths(), "", MemInfo::of(128 * k_gib, 60 * k_gib));
    ASSERT_TRUE(f) << f.error().what();
    EXPECT_EQ(*f, static_cast<uint64_t>(128 * k_gib * 0.05));
  }
  auto none = guard::resolve_host_floor(root.paths(), "", MemInfo::of(128 * k_gib, 60 * k_gib));
  ::unsetenv("SPARK_TUNE_NVML_LIB");
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, 0u);
}

// Memory taken outside the guard's cgroup: only MemAvailable moves; the watch reports the crossing
// once, repeats while it lasts, and re-arms above the floor + 1/8.
TEST(HostFloor, WatchReportsCrossingsWithHysteresis) {
  guard::HostFloorWatch w(8 * k_gib, 1000ms);
  auto t = std::chrono::steady_clock::now();
  EXPECT_FALSE(w.add(20 * k_gib, t));
  auto c = w.add(7 * k_gib, t += 100ms);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->first);
  EXPECT_EQ(c->available, 7 * k_gib);
  EXPECT_EQ(c->floor, 8 * k_gib);
  EXPECT_FALSE(w.add(6 * k_gib, t += 100ms));  // not before the repeat
  auto again = w.add(6 * k_gib, t += 1000ms);
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->first);
  EXPECT_FALSE(w.add(8 * k_gib + k_gib / 2, t += 2000ms));  // inside the hysteresis: no re-arm, no report
  EXPECT_TRUE(w.below());
  EXPECT_FALSE(w.add(10 * k_gib, t += 100ms));
  EXPECT_FALSE(w.below());
  auto second = w.add(7 * k_gib, t += 100ms);
  ASSERT_TRUE(second);
  EXPECT_TRUE(second->first);
  guard::HostFloorWatch off(0);
  EXPECT_FALSE(off.add(0, t));
}

TEST(HostFloor, GuardOptionsKeepTheFloor) {
  guard::GuardOptions o;
  o.host_floor = "6G";
  auto back = guard::options_from_json(guard::options_to_json(o));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->host_floor, "6G");
  guard::GuardState st;
  st.id = "g4";
  st.host_floor = 6 * k_gib;
  auto s = guard::GuardState::from_json(st.to_json());
  ASSERT_TRUE(s) << s.error().what();
  EXPECT_EQ(s->host_floor, 6 * k_gib);
}

TEST(HostFloor, BadHostFloorExitsTwo) {
  test::FixtureRoot root;
  root.meminfo(24 * k_gib / 1024, 16 * k_gib / 1024);
  auto r = test::run_spark_tune({"--root=" + root.root().string(), "guard", "--pid", "1", "--host-floor=-2G"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--host-floor"), std::string::npos) << r.err;
}

TEST(HostFloor, DoctorWarnsWhenAUnifiedHostGuardsWithABudgetOnly) {
  test::FixtureRoot root;
  root.meminfo(128 * k_gib / 1024, 60 * k_gib / 1024);
  HostActuator act(root.paths());
  Tuner tuner(root.paths(), act);
  guard::GuardState budget_only;
  budget_only.id = "g1";
  budget_only.pid = 4242;
  guard::GuardState with_floor = budget_only;
  with_floor.id = "g2";
  with_floor.host_floor = 6 * k_gib;
  ASSERT_TRUE(tuner.set_owner_state(guard::guard_owner("g1"), budget_only.to_json()));
  ASSERT_TRUE(tuner.set_owner_state(guard::guard_owner("g2"), with_floor.to_json()));
  doctor::Env env;
  env.paths = root.paths();
  env.nvml_library = FAKE_NVML_LIB;
  auto warned = [&](const std::vector<doctor::Finding>& v, const std::string& id) {
    for (const auto& f : v)
      if (f.status == doctor::Status::warn && f.message.find("guard " + id) != std::string::npos) return true;
    return false;
  };
  auto discrete = doctor::check_gpu(env);
  EXPECT_FALSE(warned(discrete, "g1"));  // dedicated GPU memory: the budget is enough
  UnifiedNvml u;
  auto unified = doctor::check_gpu(env);
  EXPECT_TRUE(warned(unified, "g1"));
  EXPECT_FALSE(warned(unified, "g2"));
}

}  // namespace
}  // namespace spark
