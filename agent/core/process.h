// Starting programs: fork/exec with an argv, never a shell. spawn_process is the one way every
// child of the agent starts (a hook, a guarded server, a --on-floor command, a probe or validator
// run_process captures); run_process waits for one and captures its stdout and stderr (separately,
// or together).
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace spark {

// How a child starts. Whatever is asked, the child starts as a user's process would: nice 0 when
// the calling thread's nice is below (core/child_nice.h), the normal scheduling policy when the
// thread runs at a real-time one, no signal blocked and none ignored, and oom_score_adj 0 when
// this process's is below 0 (the unit's OOMScoreAdjust=-900 shields the agent, not what it starts:
// a restarted server left at -900 would be the last process the kernel's OOM killer picks).
struct SpawnOptions {
  std::string what;                             // the error's context: "running sh", "starting hook /x"
  std::optional<std::vector<std::string>> env;  // NAME=VALUE, the whole environment; nullopt: this process's
  bool search_path = false;                     // argv[0] looked up in PATH when it holds no '/'
  int stdin_fd = -1;                            // -1: /dev/null
  int stdout_fd = -1;                           // -1: this process's
  int stderr_fd = -1;                           // -1: this process's
  bool new_session = false;                     // setsid(): its own session and process group
  std::string cwd;                              // empty: this process's
  std::optional<uid_t> uid;                     // set when it differs from ours
  std::optional<gid_t> gid;                     // set (supplementary groups dropped) when it differs
  std::optional<int> oom_score_adj;             // its value (-1000..1000), else as said above
  // Called with the child's pid while the child waits before doing anything (a move into a cgroup,
  // so that its first page is charged there); an error kills the child and is returned.
  std::function<Result<void>(pid_t)> before_exec;
};

// Returns once the child has exec'd, with its pid for the caller to reap; an error (ENOENT for a
// missing program) names the step that failed, and the child is reaped.
Result<pid_t> spawn_process(const std::vector<std::string>& argv, const SpawnOptions& options);

// This process's environment with extra entries (NAME=VALUE) ahead of it; an entry of environ whose
// name is in `replaced` is left out.
std::vector<std::string> environment_with(const std::vector<std::string>& extra,
                                          const std::vector<std::string>& replaced = {});

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
