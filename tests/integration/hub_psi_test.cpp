// The telemetry loop wakes on the memory PSI trigger: with a 10 s tick, memory stalls (reclaim in
// a small memory cgroup) close an interval early, marked psi_triggered.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "memcg_child.h"
#include "support/fixture.h"
#include "telemetry/hub.h"

using spark::telemetry::LocalSourceOptions, spark::telemetry::LocalTelemetrySource, spark::telemetry::TelemetryHub,
    spark::telemetry::memory_pressure_file;

namespace spark {
namespace {

using namespace std::chrono_literals;

TEST(TelemetryHub, PsiTriggerClosesTheIntervalEarly) {
  if (!test::is_root()) GTEST_SKIP() << "needs root for memory cgroups";
  HostPaths paths = HostPaths::system();
  LocalSourceOptions o;
  o.use_bpf = false;  // the trigger works without eBPF
  o.psi_stall = 1ms;
  o.psi_window = 2s;
  auto source = LocalTelemetrySource::create(paths, o);
  if (!source->has_pressure_trigger()) GTEST_SKIP() << "no PSI trigger on " << memory_pressure_file(paths);
  TelemetryHub hub(std::move(source), {}, 10s);
  auto first = hub.step(0ms);  // baseline sample
  ASSERT_TRUE(first.ok()) << first.error().what();
  // Drain a trigger that may already be pending from before the test.
  auto settle = std::chrono::steady_clock::now() + 2500ms;
  while (std::chrono::steady_clock::now() < settle) ASSERT_TRUE(hub.step(200ms).ok());

  test::MemcgChild cg(paths, "spark-tune-hub-" + std::to_string(::getpid()), 16ull << 20);
  if (!cg.ok()) GTEST_SKIP() << cg.why();
  std::string file = "/var/tmp/spark-tune-hub-" + std::to_string(::getpid());
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = cg.spawn("spark-hub-rcl", [file] {
    int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    std::vector<char> chunk(1 << 20, 'r');
    for (int round = 0; round < 6; ++round)
      for (int i = 0; i < 64; ++i)
        if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(i) << 20) < 0) ::_exit(3);
    ::close(fd);
  });
  ASSERT_GT(pid, 0);
  bool triggered = false;
  while (std::chrono::steady_clock::now() - t0 < 8s) {
    auto s = hub.step(200ms);
    ASSERT_TRUE(s.ok()) << s.error().what();
    if (s->interval) {
      triggered = s->interval->psi_triggered;
      break;
    }
  }
  cg.wait();
  ::unlink(file.c_str());
  EXPECT_TRUE(triggered) << "no early, PSI-triggered interval within 8 s (tick is 10 s)";
  ASSERT_TRUE(hub.latest_json().is_object());
}

}  // namespace
}  // namespace spark
