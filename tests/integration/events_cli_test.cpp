// `spark-tune events --json` end to end: a memcg OOM kill appears on the stream once, with the
// victim's pid, comm and memory cgroup.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <spawn.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <functional>
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

  int out[2], err[2];
  ASSERT_EQ(::pipe(out), 0);
  ASSERT_EQ(::pipe(err), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  posix_spawn_file_actions_addclose(&fa, err[0]);
  // Other tasks on the host may raise events too: read the whole stream and pick ours. The tool
  // stops at SIGTERM once ours is there (the timeout is only a bound).
  std::vector<std::string> args{SPARK_TUNE_BINARY, "--json", "events", "--local", "--timeout", "600s"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t tool = -1;
  ASSERT_EQ(posix_spawn(&tool, SPARK_TUNE_BINARY, &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  auto read_until = [](int fd, std::string& text, const std::function<bool()>& done, std::chrono::seconds limit) {
    char buf[4096];
    pollfd p{fd, POLLIN, 0};
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline && ::poll(&p, 1, 100) >= 0) {
      if (!(p.revents & (POLLIN | POLLHUP))) continue;
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    return done();
  };
  // The probes watch once the tool says so on stderr (a fixed 2 s wait was too short under
  // emulation: the OOM came before the probes were attached).
  std::string said;
  bool watching = read_until(
      err[0], said,
      [&] {
        return said.find("probes attached") != std::string::npos || said.find("procfs only") != std::string::npos;
      },
      std::chrono::seconds(60 * test::time_scale()));
  if (!watching) {
    ::close(err[0]);
    ::kill(tool, SIGKILL);
    ::waitpid(tool, nullptr, 0);
    FAIL() << "the events tool never said its probes watch: " << said;
  }
  pid_t hog = cg.spawn("spark-ev-hog", [] { test::hog_memory(); });
  ASSERT_GT(hog, 0) << cg.why();
  int status = cg.wait();
  ASSERT_TRUE(WIFSIGNALED(status)) << "hog not killed";

  std::string text;
  auto ours_seen = [&] {
    return text.find("\"oom_kill\"") != std::string::npos &&
           text.find("\"pid\":" + std::to_string(hog)) != std::string::npos && text.back() == '\n';
  };
  read_until(out[0], text, ours_seen, std::chrono::seconds(20 * test::time_scale()));
  ::kill(tool, SIGTERM);
  read_until(
      out[0], text, [] { return false; }, std::chrono::seconds(10 * test::time_scale()));
  ::close(out[0]);
  int tool_status = 0;
  ::waitpid(tool, &tool_status, 0);
  ::close(err[0]);  // open until the tool has gone: a line it writes at the end must not meet SIGPIPE
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
