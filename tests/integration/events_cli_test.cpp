// `spark-tune events --json` end to end: a memcg OOM kill appears on the stream once, with the
// victim's pid, comm and memory cgroup.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>

#include <nlohmann/json.hpp>

#include <chrono>
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
  std::vector<std::string> args{SPARK_TUNE_BINARY, "--json", "events", "--count", "1", "--timeout", "20s"};
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
  auto nl = text.find('\n');
  ASSERT_NE(nl, std::string::npos) << "no event line: " << text;
  auto j = nlohmann::json::parse(text.substr(0, nl));
  EXPECT_EQ(j["event"], "oom_kill");
  EXPECT_EQ(j["evidence"]["pid"], hog);
  EXPECT_EQ(j["evidence"]["comm"], "spark-ev-hog");
  EXPECT_EQ(j["evidence"]["memcg"], cg.relative());
  EXPECT_EQ(j["evidence"]["scope"], "memcg");
  EXPECT_EQ(text.find('\n', nl + 1), std::string::npos) << "--count 1 printed more: " << text;
}

}  // namespace
}  // namespace spark
