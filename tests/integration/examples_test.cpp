// The guide's vLLM launch script (examples/dgx-spark/vllm-node.sh, docs/guides/dgx-spark.md) run for
// real with stand-ins for the engine: a loader that reads the model into memory and then serves a
// TCP port (tests/fixtures/engine_standin.py) in place of `docker run vllm`. spark-tune itself is
// real: the profile applied with --persist, preflight --blocks, the window with its floor ended by
// --until-port; everything is reverted at the end.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/port.h"
#include "core/proc_stat.h"
#include "core/process.h"
#include "support/agent_client.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"

namespace spark {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

fs::path source_dir() { return fs::path(SPARK_TUNE_SOURCE_POLICY_DIR).parent_path(); }

TEST(Examples, VllmNodeScriptRunsWithStandIns) {
  if (!test::is_root()) GTEST_SKIP() << "needs root (the profile, the window's overlay)";
  if (::access("/bin/sh", X_OK) != 0) GTEST_SKIP() << "no /bin/sh";
  auto python = run_process({"python3", "--version"});
  if (!python || python->exit_code != 0) GTEST_SKIP() << "no python3 for the engine stand-in";
  test::AgentDirs dirs("spark-examples");
  ASSERT_TRUE(dirs.ok());
  fs::path models = dirs.dir() / "models";
  fs::create_directories(models);
  std::ofstream(models / "model-00001.safetensors") << std::string(8 << 20, 'w');
  std::ofstream(models / "model-00002.safetensors") << std::string(8 << 20, 'v');
  auto before = read_file("/proc/sys/vm/dirty_ratio");
  ASSERT_TRUE(before);
  int port = free_loopback_port();
  std::string engine = "python3 " + (source_dir() / "tests/fixtures/engine_standin.py").string() + " --files " +
                       models.string() + " --port " + std::to_string(port) + " --serve-s 60";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("MODEL_DIR", models.c_str(), 1);
    ::setenv("ROLE", "head", 1);
    ::setenv("PORT", std::to_string(port).c_str(), 1);
    ::setenv("SPARK_TUNE", SPARK_TUNE_BINARY, 1);
    ::setenv("ENGINE_CMD", engine.c_str(), 1);
    ::setenv("BLOCKS", "1x4M", 1);
    ::setenv("FREE_FLOOR", "4M", 1);  // held, never crossed here (MemFree is far above it)
    ::execl("/bin/sh", "sh", (source_dir() / "examples/dgx-spark/vllm-node.sh").c_str(), nullptr);
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  // The script begins its window, then becomes the engine; the window ends when the port accepts.
  bool begun = false, ended = false;
  auto end = Clock::now() + 60s;
  while (Clock::now() < end && !ended) {
    auto ev = test::run_spark_tune({"events", "--json", "--source", "window", "--after", "0", "--timeout", "300ms"});
    if (ev.exit_code == 0) {
      begun = begun || ev.out.find("\"window_begin\"") != std::string::npos;
      ended = ev.out.find("\"window_port_ready\"") != std::string::npos;
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      pid = -1;
      ADD_FAILURE() << "the script ended early: status " << st;
      break;
    }
    if (!ended) std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(begun) << "no window_begin";
  EXPECT_TRUE(ended) << "the window did not end at --until-port";
  auto events = test::run_spark_tune({"events", "--json", "--source", "window", "--after", "0", "--timeout", "300ms"});
  EXPECT_NE(events.out.find("free_bytes"), std::string::npos) << "the window held no floor: " << events.out;
  if (pid > 0) {
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
  }
  // The profile (applied with --persist) is reverted and the agent stopped: nothing left behind.
  auto rev = test::run_spark_tune({"revert", "--stop-agent"});
  EXPECT_EQ(rev.exit_code, 0) << rev.out << rev.err;
  EXPECT_EQ(read_file("/proc/sys/vm/dirty_ratio").value_or("?"), *before);
  auto status = test::run_spark_tune({"status", "--json"});
  EXPECT_EQ(status.out.find("dgx-spark"), std::string::npos) << status.out;
}

}  // namespace
}  // namespace spark
