// Issue 14 part 2 on the real kernel: the floor's ladder against a process of our own in a memory
// cgroup child of our own. The floor is crossed through an injected meminfo reading (RAM here is
// lazily initialised: MemFree says nothing a test can move); every step's effect is real: the
// window's file leaves the page cache, drop_caches and compact_memory are written, the process is
// stopped, continued, sent SIGTERM and SIGKILL, the --on-floor command runs.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/fs.h"
#include "core/proc_stat.h"
#include "integration/memcg_child.h"
#include "support/fixture.h"
#include "tune/page_cache.h"
#include "tune/tuner.h"
#include "window/floor.h"
#include "window/window.h"

using spark::state::sysctl_target;

using spark::tune::Change, spark::tune::HostActuator, spark::tune::Tuner, spark::tune::cached_bytes;

using spark::window::FloorAsk, spark::window::FloorKeeper, spark::window::FloorSpec, spark::window::WindowManager,
    spark::window::WindowSpec;

namespace spark {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr uint64_t k_mib = 1ull << 20;
constexpr uint64_t k_gib = 1ull << 30;

char state_of(pid_t pid) {
  auto st = read_proc_stat(HostPaths::system(), pid);
  return st ? st->state : '?';
}

// Paused by the floor: stopped by SIGSTOP (state T), or frozen in a cgroup v2 of its own
// (cgroup.freeze: the task sleeps in S, and the cgroup's cgroup.events says "frozen 1").
bool paused(pid_t pid) {
  if (state_of(pid) == 'T') return true;
  auto cg = read_file("/proc/" + std::to_string(pid) + "/cgroup");
  if (!cg) return false;
  std::istringstream in(*cg);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    std::string root = fs::exists("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
    auto ev = read_file(root + line.substr(3) + "/cgroup.events");
    return ev && ev->find("frozen 1") != std::string::npos;
  }
  return false;
}

class FloorReal : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::is_root()) GTEST_SKIP() << "needs root (drop_caches, compact_memory, signals to our cgroup)";
    char tmpl[] = "/var/tmp/spark-floor-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
    paths = HostPaths::system();
    paths.state = dir / "state";
    paths.run = dir / "run";
    act = std::make_unique<HostActuator>(paths);
    tuner = std::make_unique<Tuner>(paths, *act);
    memcg = std::make_unique<test::MemcgChild>(paths, "spark-floor-test", 256 * k_mib);
    if (!memcg->ok()) GTEST_SKIP() << "no memory cgroup child of our own: " << memcg->why();
    file = dir / "model.bin";
    std::ofstream(file) << std::string(16 * k_mib, 'm');
    // Written back: fadvise drops clean pages only.
    int fd = ::open(file.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ::fsync(fd);
    ::close(fd);
  }
  void TearDown() override {
    keeper.reset();
    memcg.reset();  // kills and reaps its process, removes the cgroup
    if (tuner) (void)tuner->revert_all();
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
  pid_t spawn(bool ignore_term) {
    return memcg->spawn("spark-floor-kid", [ignore_term] {
      if (ignore_term) ::signal(SIGTERM, SIG_IGN);
      for (;;) ::pause();
    });
  }
  void make_keeper(pid_t pid, FloorSpec s) {
    keeper = std::make_unique<FloorKeeper>(paths, *tuner, "wt", std::vector<fs::path>{file}, pid, s,
                                           [this](const Event& e) { events.push_back(e); });
    keeper->set_meminfo_source([this]() -> Result<MemInfo> { return MemInfo::of(24 * k_gib, 8 * k_gib, free); });
  }
  // Ticks every 5 ms until pred or the limit.
  template <typename F>
  bool tick_until(F pred, std::chrono::milliseconds limit = 5000ms) {
    auto end = Clock::now() + limit;
    while (Clock::now() < end) {
      keeper->tick(Clock::now());
      if (pred()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return pred();
  }
  int actions(const std::string& name) const {
    int n = 0;
    for (const auto& e : events)
      if (e.type == "floor_action" && e.data.value("action", "") == name) ++n;
    return n;
  }
  static FloorSpec spec() {
    FloorSpec s;
    s.free_bytes = k_gib;
    s.hysteresis = 256 * k_mib;
    s.grace = 30ms;
    s.max_pause = 300ms;
    s.kill_grace = 300ms;
    return s;
  }

  fs::path dir, file;
  HostPaths paths;
  std::unique_ptr<HostActuator> act;
  std::unique_ptr<Tuner> tuner;
  std::unique_ptr<test::MemcgChild> memcg;
  std::unique_ptr<FloorKeeper> keeper;
  std::vector<Event> events;
  uint64_t free = 4 * k_gib;
};

TEST_F(FloorReal, EachStepOfTheLadderActsAndAPausedTreeIsResumed) {
  pid_t kid = spawn(false);
  ASSERT_GT(kid, 0) << memcg->why();
  // The window's file in the page cache.
  {
    std::ifstream in(file, std::ios::binary);
    std::string buf((std::istreambuf_iterator<char>(in)), {});
  }
  auto cached = cached_bytes(file);
  ASSERT_TRUE(cached);
  if (*cached < 8 * k_mib) GTEST_SKIP() << "the file did not stay in the page cache (" << *cached << " bytes)";
  FloorSpec s = spec();
  s.max_pause = 120s;  // paused until memory comes back, however long the host-wide steps take here
  make_keeper(kid, s);
  keeper->tick(Clock::now());
  EXPECT_TRUE(events.empty());

  free = 512 * k_mib;  // crossed
  ASSERT_TRUE(tick_until([&] { return actions("evict") == 1; }));
  EXPECT_LT(*cached_bytes(file), 1 * k_mib) << "step 1 left the window's file in the cache";
  // drop_caches and compact run on threads of their own (seconds on a busy host): the ladder goes on
  // to the pause meanwhile, and their events come when they are done.
  ASSERT_TRUE(tick_until([&] { return actions("pause") == 1; }, 30000ms));
  ASSERT_TRUE(tick_until([&] { return actions("drop_caches") == 1 && actions("compact") == 1; }, 60000ms));
  EXPECT_TRUE(test::eventually([&] { return paused(kid); }, 5000ms)) << "state " << state_of(kid);
  EXPECT_TRUE(keeper->paused());
  for (const auto& e : events)
    if (e.type == "floor_action") {
      EXPECT_FALSE(e.data.contains("error")) << e.summary;
    }

  // Above the floor but inside the hysteresis: still paused; above it: continued.
  free = k_gib + 100 * k_mib;
  for (int i = 0; i < 5; ++i) keeper->tick(Clock::now());
  EXPECT_TRUE(paused(kid)) << "state " << state_of(kid);
  free = 2 * k_gib;
  keeper->tick(Clock::now());
  EXPECT_FALSE(keeper->paused());
  EXPECT_TRUE(test::eventually([&] { return !paused(kid); }, 5000ms)) << "state " << state_of(kid);
  EXPECT_EQ(events.back().type, "floor_restored");
  EXPECT_TRUE(events.back().data["resumed"].get<bool>());
}

TEST_F(FloorReal, AMemoryPsiTriggerWakesTheFloor) {
  if (!fs::exists("/proc/pressure/memory")) GTEST_SKIP() << "no PSI in this kernel (psi=1 on the command line)";
  make_keeper(0, spec());
  ASSERT_GE(keeper->psi_fd(), 0) << "the floor holds no memory PSI trigger";
  // A wake-up checks at once: a crossing seen there is acted on without waiting for the period.
  free = 256 * k_mib;
  keeper->on_psi(Clock::now());
  EXPECT_EQ(actions("evict"), 1);
}

TEST_F(FloorReal, BoundedPauseEndsInSigtermThenSigkill) {
  pid_t kid = spawn(true);  // ignores SIGTERM: only the SIGKILL after the grace ends it
  ASSERT_GT(kid, 0) << memcg->why();
  make_keeper(kid, spec());
  free = 256 * k_mib;
  ASSERT_TRUE(tick_until([&] { return actions("pause") == 1; }));
  ASSERT_TRUE(tick_until([&] { return actions("stop") == 1; }));
  // SIGTERM was sent and the tree continued so that it can handle it; it ignores it.
  EXPECT_TRUE(test::eventually([&] { return !paused(kid); }, 5000ms));
  EXPECT_FALSE(keeper->paused());
  ASSERT_TRUE(tick_until([&] { return actions("kill") == 1; }));
  int status = memcg->wait();
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_TRUE(keeper->stats().stopped);
}

TEST_F(FloorReal, SigtermStopsAProcessThatHandlesIt) {
  pid_t kid = spawn(false);
  ASSERT_GT(kid, 0) << memcg->why();
  make_keeper(kid, spec());
  free = 256 * k_mib;
  ASSERT_TRUE(tick_until([&] { return actions("stop") == 1; }));
  int status = memcg->wait();
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_EQ(actions("kill"), 0);
}

TEST_F(FloorReal, OnFloorCommandIsRunInsteadOfSignals) {
  pid_t kid = spawn(false);
  ASSERT_GT(kid, 0) << memcg->why();
  FloorSpec s = spec();
  fs::path out = dir / "on-floor.out";
  // The user's command, fork/exec'd with its argv (the test uses sh only to write a file).
  s.on_floor = {"/bin/sh", "-c", "echo \"$SPARK_TUNE_WINDOW $SPARK_TUNE_PID\" > " + out.string()};
  make_keeper(kid, s);
  free = 256 * k_mib;
  ASSERT_TRUE(tick_until([&] { return actions("stop") == 1; }));
  ASSERT_TRUE(test::eventually([&] { return fs::exists(out) && fs::file_size(out) > 0; }, 5000ms));
  EXPECT_EQ(trim(*read_file(out)), "wt " + std::to_string(kid));
  // No signal from spark-tune: the process is still there and running.
  for (int i = 0; i < 80; ++i) keeper->tick(Clock::now()), std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(process_alive(paths, kid));
  EXPECT_FALSE(paused(kid));
  EXPECT_EQ(actions("kill"), 0);
}

TEST_F(FloorReal, WindowEndNeverLeavesTheTreePaused) {
  pid_t kid = spawn(false);
  ASSERT_GT(kid, 0) << memcg->why();
  FloorSpec s = spec();
  s.max_pause = 60s;
  make_keeper(kid, s);
  free = 256 * k_mib;
  ASSERT_TRUE(tick_until([&] { return actions("pause") == 1; }));
  ASSERT_TRUE(test::eventually([&] { return paused(kid); }, 5000ms));
  auto summary = keeper->finish();
  EXPECT_TRUE(test::eventually([&] { return !paused(kid); }, 5000ms)) << "the window ended with its process stopped";
  EXPECT_GE(summary["paused_ms"].get<int64_t>(), 0);
  EXPECT_EQ(summary["actions"]["pause"], 1);
}

TEST_F(FloorReal, WindowBeginRefusesAFloorAlreadyCrossedAndChangesNothing) {
  WindowManager mgr(paths, *tuner);
  WindowSpec w;
  w.overlay = std::vector<Change>{{sysctl_target("vm.dirty_ratio"), "7", ""}};
  w.floor = FloorAsk{};
  w.floor->free = "99%";  // MemFree is never 99% of RAM with this process running
  auto before = read_file(paths.proc_sys("vm/dirty_ratio"));
  auto r = mgr.begin(w);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code().value(), EINVAL);
  EXPECT_NE(std::string(r.error().what()).find("--force"), std::string::npos) << r.error().what();
  EXPECT_EQ(read_file(paths.proc_sys("vm/dirty_ratio")).value_or("?"), before.value_or("!"));
  EXPECT_TRUE(mgr.list().empty());
  // --force: begun, with its floor in the record; ended, restored.
  w.floor->force = true;
  w.ttl = 60s;
  auto ok = mgr.begin(w);
  ASSERT_TRUE(ok) << ok.error().what();
  EXPECT_FALSE(ok->floor.is_null());
  EXPECT_GT(ok->floor["free_bytes"].get<uint64_t>(), 0u);
  ASSERT_TRUE(mgr.end(ok->id, "test"));
  EXPECT_EQ(read_file(paths.proc_sys("vm/dirty_ratio")).value_or("?"), before.value_or("!"));
}

}  // namespace
}  // namespace spark
