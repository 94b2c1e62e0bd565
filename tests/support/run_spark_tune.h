// Runs the built spark-tune binary as a real process (fork/exec with an argv through
// core/process.h, no shell): every test that drives the CLI uses this one helper.
#pragma once

#include <string>
#include <vector>

#include "core/process.h"

namespace spark::test {

// exit_code (-1 when a signal ended it, or when it could not start: err says why), signal, out, err.
using ProcessResult = ProcessOutput;

// build/agent/spark-tune ARGS..., with extra environment entries ("NAME=VALUE").
ProcessResult run_spark_tune(const std::vector<std::string>& args, const std::vector<std::string>& env = {});

}  // namespace spark::test
