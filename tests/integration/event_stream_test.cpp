// The one event stream from a running agent (issue 12): a window's begin / TTL expiry / end (with
// its cache figures), an apply and a revert, a guard's OOM kill (one event, naming the guard, the
// probes' evidence merged in), and a telemetry OOM kill outside any guard all appear on
// `spark-tune events --json` with their fields; `guard wait oom_kill` sees the guard's; /metrics
// counts them by source and type.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "core/event_log.h"
#include "core/fs.h"
#include "daemon/protocol.h"
#include "integration/loop_device.h"
#include "memcg_child.h"
#include "support/agent_client.h"
#include "support/fixture.h"
#include "support/host_guard.h"
#include "support/run_spark_tune.h"
#include "tune/tuner.h"

using spark::tune::HostActuator, spark::tune::Tuner;

namespace spark {
namespace {

using namespace std::chrono_literals;

std::vector<nlohmann::json> ndjson(const std::string& text) {
  std::vector<nlohmann::json> out;
  for (const auto& line : split_lines(text))
    if (!trim(line).empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

class EventStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::is_root()) GTEST_SKIP() << "needs root";
    loop = std::make_unique<test::LoopFs>(64);
    if (!loop->ok()) GTEST_SKIP() << "no scratch loop filesystem: " << loop->error();
    loop->set_read_ahead_kb("4096");
    dirs = std::make_unique<test::AgentDirs>("spark-events");
    ASSERT_TRUE(dirs->ok());
    paths = HostPaths::system();
    model = loop->mnt() / "model.bin";
    ASSERT_TRUE(test::make_file(model, 4 << 20));
    agent = test::spawn_tool({"agent", "--metrics-port", "0"});
    ASSERT_GT(agent.pid, 0);
    for (int i = 0; i < 1000 && !daemon::call(paths, "agent.ping", nlohmann::json::object()); ++i)
      std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(daemon::call(paths, "agent.ping", nlohmann::json::object())) << "the agent did not answer";
  }
  void TearDown() override {
    if (agent.pid > 0) {
      ::kill(agent.pid, SIGTERM);
      auto done = test::finish(agent, 30s);
      if (HasFailure()) std::fprintf(stderr, "agent stderr:\n%s\n", done.err.c_str());
    }
    if (dirs) {
      HostActuator act(paths);
      Tuner tuner(paths, act);
      (void)tuner.revert_all();
    }
    loop.reset();
    dirs.reset();
  }
  uint64_t cursor() {
    auto r = daemon::call(paths, "events.list", nlohmann::json::object());
    EXPECT_TRUE(r) << (r ? "" : r.error().what());
    return r ? r->value("next", uint64_t{0}) : 0;
  }
  // Everything the agent logged after `after`, through the CLI.
  std::vector<nlohmann::json> stream(uint64_t after, std::vector<std::string> filters = {}) {
    std::vector<std::string> args{"--json", "events", "--after", std::to_string(after), "--timeout", "1500ms"};
    args.insert(args.end(), filters.begin(), filters.end());
    auto r = test::run_spark_tune(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return ndjson(r.out);
  }
  static std::vector<nlohmann::json> of(const std::vector<nlohmann::json>& evs, const std::string& source,
                                        const std::string& type, const std::string& subject = "") {
    std::vector<nlohmann::json> out;
    for (const auto& e : evs)
      if (e["source"] == source && e["type"] == type && (subject.empty() || e["subject"] == subject)) out.push_back(e);
    return out;
  }

  std::unique_ptr<test::LoopFs> loop;
  std::unique_ptr<test::AgentDirs> dirs;
  HostPaths paths;
  fs::path model;
  test::Spawned agent;
};

TEST_F(EventStreamTest, WindowBeginTtlAndEndWithCacheFigures) {
  uint64_t c = cursor();
  auto b = test::run_spark_tune(
      {"--json", "window", "begin", "--device", loop->name(), "--readahead", "16k", "--no-overlay", "--ttl", "500ms"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::string ttl_id = nlohmann::json::parse(b.out)["id"];
  auto f =
      test::run_spark_tune({"--json", "window", "begin", "--files", model.string(), "--no-overlay", "--ttl", "60s"});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  std::string file_id = nlohmann::json::parse(f.out)["id"];
  for (int i = 0; i < 500 && loop->read_ahead_kb() != "4096"; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(test::run_spark_tune({"window", "end", file_id}).exit_code, 0);

  auto evs = stream(c, {"--source", "window"});
  auto begun = of(evs, "window", "window_begin", ttl_id);
  ASSERT_EQ(begun.size(), 1u) << nlohmann::json(evs).dump();
  EXPECT_GT(begun[0]["seq"].get<uint64_t>(), c);
  EXPECT_EQ(begun[0]["data"]["readahead_kb"], 16);
  auto expired = of(evs, "window", "window_ttl_expired", ttl_id);
  ASSERT_EQ(expired.size(), 1u) << nlohmann::json(evs).dump();
  auto ended = of(evs, "window", "window_end", ttl_id);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0]["data"]["reason"], "TTL ran out");
  EXPECT_GE(ended[0]["data"]["restored"].get<int>(), 1);
  EXPECT_GT(ended[0]["seq"], expired[0]["seq"]);
  EXPECT_FALSE(ended[0]["summary"].get<std::string>().empty());

  auto file_end = of(evs, "window", "window_end", file_id);
  ASSERT_EQ(file_end.size(), 1u) << nlohmann::json(evs).dump();
  ASSERT_TRUE(file_end[0]["data"].contains("cache_stats")) << file_end[0].dump();
  EXPECT_GE(file_end[0]["data"]["cache_stats"]["ticks"].get<uint64_t>(), 1u);
  for (const auto& e : evs) EXPECT_EQ(e["source"], "window") << "--source filters in the agent";

  // The journal view and the counters: /metrics counts by source and type, zeros included.
  auto m = daemon::call(paths, "telemetry.metrics", nlohmann::json::object());
  ASSERT_TRUE(m);
  std::string text = (*m)["text"];
  EXPECT_NE(text.find("spark_tune_events_total{source=\"window\",type=\"window_end\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("spark_tune_events_total{source=\"guard\",type=\"server_ready\"} 0"), std::string::npos);
  EXPECT_NE(text.find("spark_tune_events_dropped_total 0"), std::string::npos);
}

TEST_F(EventStreamTest, ApplyAndRevertReachTheAgentsLog) {
  const std::string key = "/proc/sys/vm/vfs_cache_pressure";
  std::string before = test::kernel_value(key);
  fs::path profile = dirs->dir() / "events-test.toml";
  {
    std::ofstream p(profile);
    p << "[sysctl]\nvm.vfs_cache_pressure = " << (std::stoi(before) == 137 ? 138 : 137) << "\n";
  }
  uint64_t c = cursor();
  auto a = test::run_spark_tune({"apply", profile.string()});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto r = test::run_spark_tune({"revert"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::kernel_value(key), before);
  auto evs = stream(c, {"--source", "profile"});
  ASSERT_EQ(evs.size(), 2u) << nlohmann::json(evs).dump();
  EXPECT_EQ(evs[0]["type"], "profile_applied");
  EXPECT_EQ(evs[0]["data"]["changed"], 1);
  EXPECT_EQ(evs[0]["data"]["peer_uid"], 0);
  EXPECT_FALSE(evs[0]["subject"].get<std::string>().empty());
  EXPECT_EQ(evs[1]["type"], "profile_reverted");
  EXPECT_GE(evs[1]["data"]["restored"].get<int>(), 1);
  EXPECT_EQ(evs[1]["seq"].get<uint64_t>(), evs[0]["seq"].get<uint64_t>() + 1);
}

// A guarded process killed at its box's limit: one oom_kill, source guard, naming the guard; the
// probes' evidence merged in when they saw it; `guard wait oom_kill` gets it. A kill outside any
// guard is a telemetry oom_kill naming the pid.
TEST_F(EventStreamTest, GuardOomIsOneEventAndTelemetryOomIsItsOwn) {
  int go[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::prctl(PR_SET_NAME, "spark-ev-boxed");
    ::close(go[1]);
    char x;
    if (::read(go[0], &x, 1) != 1) ::_exit(3);
    test::hog_memory();
  }
  ::close(go[0]);
  // Whatever fails below, the child does not stay behind in the box (the box could not go).
  struct Reaper {
    pid_t pid;
    int fd;
    ~Reaper() {
      if (fd >= 0) ::close(fd);
      if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reaper{child, go[1]};
  uint64_t c = cursor();
  auto g = test::run_spark_tune({"--json", "guard", "--pid", std::to_string(child), "--memory-max", "64M"});
  if (g.exit_code != 0) GTEST_SKIP() << "no guard here: " << g.err;
  std::string id = nlohmann::json::parse(g.out).value("id", "");
  ASSERT_FALSE(id.empty()) << g.out;
  auto waiter = test::spawn_tool({"guard", "wait", "oom_kill", "--guard", id, "--timeout", "30s"});
  // The child grows once the waiter waits in the agent (events.status counts the long-polls).
  auto waiting = [&] {
    auto s = daemon::call(paths, "events.status", nlohmann::json::object());
    return s && s->value("waiters", 0) >= 1;
  };
  for (int i = 0; i < 1000 && !waiting(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(waiting()) << "guard wait never asked the agent";
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  reaper.pid = -1;
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  auto w = test::finish(waiter, 40s);
  ASSERT_TRUE(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0) << w.out << w.err;
  auto waited = nlohmann::json::parse(trim(w.out));
  EXPECT_EQ(waited["source"], "guard");
  EXPECT_EQ(waited["type"], "oom_kill");
  EXPECT_EQ(waited["subject"], id);

  // A process outside every guard, killed in a memory cgroup of its own: telemetry's.
  test::MemcgChild cg(paths, "spark-ev-free-" + std::to_string(::getpid()), 32ull << 20);
  pid_t free_hog = -1;
  if (cg.ok()) {
    // The guard ended with its server (no --restart): no guard runs, so no hold.
    for (int i = 0; i < 1000; ++i) {
      auto l = daemon::call(paths, "guard.list", nlohmann::json::object());
      if (l && l->empty()) break;
      std::this_thread::sleep_for(10ms);
    }
    free_hog = cg.spawn("spark-ev-free", [] { test::hog_memory(); });
    ASSERT_GT(free_hog, 0) << cg.why();
    int st = cg.wait();
    ASSERT_TRUE(WIFSIGNALED(st)) << "hog not killed";
  }
  // The log holds the guard's kill once, whatever the probes saw (2 s hold at most).
  std::this_thread::sleep_for(EventLog::k_oom_join + 500ms);
  auto evs = stream(c, {"--type", "oom_kill"});
  auto guard_kills = of(evs, "guard", "oom_kill", id);
  ASSERT_EQ(guard_kills.size(), 1u) << nlohmann::json(evs).dump();
  const auto& k = guard_kills[0];
  EXPECT_EQ(k["seq"], waited["seq"]);
  auto victims = k["data"]["victims"];
  EXPECT_TRUE(k["data"]["pid"] == child || std::find(victims.begin(), victims.end(), child) != victims.end())
      << k.dump();
  for (const auto& e : of(evs, "telemetry", "oom_kill"))
    EXPECT_NE(e["data"].value("pid", -1), child) << "the guard's kill came twice: " << e.dump();
  auto ts = daemon::call(paths, "telemetry.status", nlohmann::json::object());
  bool probes = ts && ts->value("probes_attached", 0) > 0;
  if (probes) {
    ASSERT_TRUE(k["data"].contains("probe")) << "the probes' evidence was not merged: " << k.dump();
    EXPECT_EQ(k["data"]["probe"]["comm"], "spark-ev-boxed");
  }
  if (free_hog > 0) {
    auto t = of(evs, "telemetry", "oom_kill", std::to_string(free_hog));
    if (probes) {
      ASSERT_EQ(t.size(), 1u) << nlohmann::json(evs).dump();
      EXPECT_EQ(t[0]["data"]["comm"], "spark-ev-free");
      EXPECT_FALSE(t[0]["hint"].get<std::string>().empty());
    }
  }
  if (!probes) GTEST_SKIP() << "the agent runs without eBPF: the merge with the probes' event not checked";
  if (free_hog < 0) GTEST_SKIP() << "no memory cgroup of our own: the telemetry oom_kill not checked";
}

}  // namespace
}  // namespace spark
