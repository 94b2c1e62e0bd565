#include "cli/guard_flags.h"

#include "window/floor.h"

#include "core/units.h"
#include "guard/process.h"

using spark::window::parse_floor;

namespace spark::cli {

Result<std::chrono::milliseconds> duration_arg(const std::string& flag, const std::string& text) {
  auto d = parse_duration(text);
  if (!d) return input_error(flag + " '" + text + "': write a duration like 500ms, 30s, 5m");
  return *d;
}

Result<std::optional<uint64_t>> size_arg(const std::string& flag, const std::string& text) {
  if (text.empty()) return std::optional<uint64_t>();
  auto s = parse_size(text);
  if (!s) return input_error(flag + " '" + text + "': write a size like 8G or 512MiB");
  return std::optional<uint64_t>(*s);
}

void add_guard_flags(CLI::App* app, GuardFlags& f, const std::string& group) {
  auto in_group = [&](CLI::Option* o) {
    if (!group.empty()) o->group(group);
  };
  in_group(app->add_option("--budget", f.budget,
                           "growth allowed after the load: SIZE or \"30% of available\" "
                           "(default min(8 GiB, 30% of MemAvailable))"));
  in_group(app->add_option("--memory-high", f.memory_high, "absolute throttle limit (v2 memory.high, v1 soft limit)"));
  in_group(
      app->add_option("--memory-max", f.memory_max, "absolute hard limit (the kernel kills inside the box above it)"));
  in_group(app->add_flag("--force", f.force, "allow a limit below what the process already uses"));
  in_group(app->add_option("--on-oom", f.on_oom,
                           "run CMD (no shell; split on blanks) when the kernel kills inside the box; "
                           "the event JSON on stdin and in SPARK_TUNE_EVENT"));
  in_group(app->add_option("--hook-timeout", f.hook_timeout, "kill a hook that runs longer (default 10s)"));
  in_group(app->add_option("--restart-max", f.restart_max, "at most N restarts within --restart-window (default 5)"));
  in_group(app->add_option("--restart-window", f.restart_window, "default 5m"));
  in_group(app->add_option("--restart-backoff", f.restart_backoff,
                           "first restart at once, then this, doubling (default 250ms)"));
  in_group(
      app->add_option("--host-floor", f.host_floor,
                      "on a unified-memory host, act as for the budget when MemAvailable falls below SIZE or N% "
                      "of RAM (the cgroup does not see GPU memory there); default: the profile's guard.host_floor, "
                      "else 5%, on such a host only; off turns it off")
          ->type_name("SIZE|N%|off"));
  in_group(app->add_option("--warn-eta", f.warn_eta, "memory_growth when the limit is nearer than this (default 30s)"));
}

Result<void> fill_guard_options(const GuardFlags& f, guard::GuardOptions& o) {
  o.budget = f.budget;
  SPARK_TRY(o.memory_high, size_arg("--memory-high", f.memory_high));
  SPARK_TRY(o.memory_max, size_arg("--memory-max", f.memory_max));
  if (!f.settle_after.empty()) {
    SPARK_TRY(o.settle_after, duration_arg("--settle-after", f.settle_after));
  }
  o.force = f.force;
  o.on_oom = guard::split_command(f.on_oom);
  SPARK_TRY(o.hook_timeout, duration_arg("--hook-timeout", f.hook_timeout));
  o.restart = f.restart;
  o.restart_max = f.restart_max;
  SPARK_TRY(o.restart_window, duration_arg("--restart-window", f.restart_window));
  SPARK_TRY(o.restart_backoff, duration_arg("--restart-backoff", f.restart_backoff));
  SPARK_TRY(o.warn_eta, duration_arg("--warn-eta", f.warn_eta));
  o.host_floor = f.host_floor;
  if (!o.host_floor.empty()) SPARK_TRY_VOID(parse_floor(o.host_floor, 0, "--host-floor"));  // bad input: exit 2
  return {};
}

}  // namespace spark::cli
