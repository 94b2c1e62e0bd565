// `spark-tune events --json` end to end: a memcg OOM kill appears on the stream once, with the
// victim's pid, comm and memory cgroup.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <spawn.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "memcg_child.h"
#include "support/fixture.h"

extern char** environ;

namespace spark {
namespace {

using namespace std::chrono_literals;

TEST(EventsCli, MemcgOomKillOnTheStream) {
  if (!test::is_root()) GTEST_SKIP() << "needs root for BPF and memory cgroups";
  HostPaths paths = HostPaths::system();
  test::MemcgChild cg(paths, "spark-tune-events-" + std::to_string(::getpid()), 32ull << 20);
  if (!cg.ok()) GTEST_SKIP() << cg.why();

  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  // Other tasks on the host may raise events too: read the whole stream for a while and pick ours.
  std::vector<std::string> args{SPARK_TUNE_BINARY, "--json", "events", "--timeout", "6s"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t tool = -1;
  ASSERT_EQ(posix_spawn(&tool, SPARK_TUNE_BINARY, &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);

  std::this_thread::sleep_for(2s);  // probes load and attach
  pid_t hog = cg.spawn("spark-ev-hog", [] { test::hog_memory(); });
  ASSERT_GT(hog, 0) << cg.why();
  int status = cg.wait();
  ASSERT_TRUE(WIFSIGNALED(status)) << "hog not killed";

  std::string text;
  char buf[4096];
  pollfd p{out[0], POLLIN, 0};
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline && ::poll(&p, 1, 1000) >= 0) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int tool_status = 0;
  ::waitpid(tool, &tool_status, 0);
  ASSERT_TRUE(WIFEXITED(tool_status) && WEXITSTATUS(tool_status) == 0) << text;
  std::vector<nlohmann::json> ours;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    auto j = nlohmann::json::parse(text.substr(pos, nl - pos));
    pos = nl + 1;
    // The one event shape (issue 12): seq, source, type, subject, summary, hint, data.
    ASSERT_TRUE(j.contains("seq") && j.contains("source") && j.contains("type") && j.contains("hint") &&
                j.contains("data"))
        << j.dump();
    if (j["type"] == "oom_kill" && j["data"].value("pid", -1) == hog) ours.push_back(j);
  }
  ASSERT_EQ(ours.size(), 1u) << text;
  const auto& j = ours[0];
  EXPECT_EQ(j["source"], "telemetry");
  EXPECT_EQ(j["subject"], std::to_string(hog));
  EXPECT_EQ(j["data"]["comm"], "spark-ev-hog");
  EXPECT_EQ(j["data"]["memcg"], cg.relative());
  EXPECT_EQ(j["data"]["scope"], "memcg");
}

}  // namespace
}  // namespace spark
