// Runs the built spark-tune binary as a real process (fork/exec with an argv through
// core/process.h, no shell): every test that drives the CLI uses these helpers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "core/process.h"

namespace spark::test {

// exit_code (-1 when a signal ended it, or when it could not start: err says why), signal, out, err.
using ProcessResult = ProcessOutput;

// build/agent/spark-tune ARGS..., with extra environment entries ("NAME=VALUE"); waits for it.
ProcessResult run_spark_tune(const std::vector<std::string>& args, const std::vector<std::string>& env = {});

// spark-tune started and left running (an agent, a tool that waits): its stdout and stderr are
// pipes the caller reads or hands to finish(), and closes.
struct Spawned {
  pid_t pid = -1;
  int out = -1;  // stdout
  int err = -1;  // stderr
};

// build/agent/spark-tune ARGS..., with extra environment entries ("NAME=VALUE").
Spawned spawn_tool(const std::vector<std::string>& args, const std::vector<std::string>& env = {});

struct Finished {
  int status = -1;  // wait status
  std::string out, err;
};

// Reads both pipes until the tool exits (or the deadline passes: then it is killed), then reaps it.
Finished finish(Spawned s, std::chrono::seconds limit);

// A forked child that only waits (pause()) until it is killed: a process for a window to watch.
// The caller kills and reaps it. -1 when fork failed.
pid_t fork_paused_child();

}  // namespace spark::test
