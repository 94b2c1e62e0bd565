// Window options shared by `window begin` and `run`, and the extension point of `run`.
//
// Extending `run` (the guard's --budget, --on-oom, --restart ...) without editing run.cpp: add a
// file agent/cli/run_<name>.cpp containing
//
//   static const spark::cli::RunExtensionRegistration reg{{
//       "guard",
//       [](CLI::App& run, spark::cli::RunOptions& o) { run.add_option("--budget", ...); },
//       [](const Context& ctx, RunOptions& o, pid_t child) -> Result<void> { ... },  // before exec
//       [](const Context& ctx, RunOptions& o, pid_t child, int status) { return false; }}};  // after exit
//
// before_exec runs in the parent once the child exists but before it execs the command (the window
// has begun; move the child into a cgroup here); an error kills the child and fails `run` (exit 2).
// after_exit runs when the command has exited; returning true asks `run` to start it again (a new
// window is not begun). Extensions keep their own state in RunOptions::extensions[name].
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "cli/floor_options.h"
#include "cli/registry.h"
#include "core/result.h"
#include "window/window.h"

namespace spark::cli {

// Options as typed; to_spec() validates and converts.
struct WindowCliOptions {
  std::vector<std::string> files;
  std::vector<std::string> devices;
  std::string readahead;       // SIZE or off
  std::string cache;           // evict|drop|off
  std::string cache_interval;  // DURATION
  std::string mapped;          // idle|cold|pageout|off
  std::string mapped_budget;   // auto | SIZE
  std::string read_ahead;      // SIZE | off
  std::string ttl;             // DURATION
  pid_t pid = 0;
  std::string until_port;
  std::vector<std::string> sysctls;  // KEY=VALUE, replaces the default overlay
  bool no_overlay = false;
  std::string profile;  // window profile (default load-window)
  std::string label;
  FloorCliOptions floor;  // cli/floor_options.h
};

void add_window_options(CLI::App& app, WindowCliOptions& o, bool with_pid);
// --pid: a positive process id (0 would silently mean "no process").
CLI::Validator pid_validator();
Result<window::WindowSpec> to_spec(const WindowCliOptions& o);

struct RunOptions {
  WindowCliOptions window;
  std::vector<std::string> command;
  nlohmann::json extensions = nlohmann::json::object();
};

struct RunExtension {
  std::string name;
  std::function<void(CLI::App& run, RunOptions& options)> add_options;
  std::function<Result<void>(const Context& ctx, RunOptions& options, pid_t child)> before_exec;
  std::function<bool(const Context& ctx, RunOptions& options, pid_t child, int status)> after_exit;
};
std::vector<RunExtension>& run_extensions();
struct RunExtensionRegistration {
  explicit RunExtensionRegistration(RunExtension e) { run_extensions().push_back(std::move(e)); }
};

// Connects to the agent, starting one when none answers; errors carry what to do.
Result<nlohmann::json> agent_call(const Context& ctx, const std::string& method, const nlohmann::json& params);
// Exit code for an error from the agent: bad input (EINVAL, ENOENT...) 2, otherwise 2 as well but
// with the system's reason; kept in one place.
int agent_error(const Context& ctx, const Error& e);

}  // namespace spark::cli
