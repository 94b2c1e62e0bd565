// The guard options shared by `spark-tune guard` and `spark-tune run` (budget, limits, hooks,
// restart policy): one set of flags, one conversion with errors that name the flag.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <optional>
#include <string>

#include "core/result.h"
#include "guard/supervisor.h"

namespace spark::cli {

struct GuardFlags {
  std::string budget, memory_high, memory_max, settle_after, on_oom, hook_timeout = "10s", warn_eta = "30s";
  bool force = false, restart = false;
  int restart_max = 5;
  std::string restart_window = "5m", restart_backoff = "250ms";
  std::string host_floor;  // guard/host_floor.h
};

// Adds the flags both verbs take, in `group` when one is given. --settle-after and --restart mean
// slightly different things per verb, so each verb adds those two itself.
void add_guard_flags(CLI::App* app, GuardFlags& f, const std::string& group = "");

// The common fields into GuardOptions; --settle-after only when given.
Result<void> fill_guard_options(const GuardFlags& f, guard::GuardOptions& o);

Result<std::chrono::milliseconds> duration_arg(const std::string& flag, const std::string& text);
Result<std::optional<uint64_t>> size_arg(const std::string& flag, const std::string& text);

}  // namespace spark::cli
