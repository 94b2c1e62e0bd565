// Running a program the issue names (systemd-analyze verify), or spark-tune itself in tests: fork/exec
// with an argv, never a shell; stdout and stderr captured (separately, or together).
#pragma once

#include <string>
#include <vector>

#include "core/result.h"

namespace spark {

struct ProcessOutput {
  int exit_code = -1;  // -1 when a signal ended it
  int signal = 0;
  std::string out;
  std::string err;  // empty when merge_stderr
};

struct ProcessOptions {
  std::vector<std::string> extra_env;  // NAME=VALUE, ahead of this process's environment
  bool merge_stderr = false;           // stderr into out, in the order written
};

// argv[0] is looked up in PATH when it holds no '/'. stdin is /dev/null. An error only when the
// program cannot be started; its exit status is in the result.
Result<ProcessOutput> run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {});

}  // namespace spark
