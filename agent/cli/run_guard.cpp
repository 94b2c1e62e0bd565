// Guard options for `spark-tune run`: the command runs in a memory cgroup of its own for as long as
// it lives (the window only for its load). The agent's guard boxes the child before it execs (its
// first page is charged to the box), warns on growth, runs --on-oom; with --until-port the footprint
// is measured when the port first accepts (the load is done) and every start emits server_ready.
// --restart is run's own: the command is started again (no new window) after the kernel killed it
// (SIGKILL) or it failed (non-zero exit), with backoff, at most --restart-max times per
// --restart-window; each start gets a fresh guard.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "cli/guard_flags.h"
#include "cli/registry.h"
#include "cli/window_options.h"
#include "core/log.h"
#include "core/units.h"
#include "guard/process.h"
#include "guard/supervisor.h"

namespace {

using namespace spark;

struct RunGuardArgs : cli::GuardFlags {
  std::vector<std::chrono::steady_clock::time_point> restarts;
};

RunGuardArgs& args() {
  static RunGuardArgs a;
  return a;
}

bool wanted(const RunGuardArgs& a) {
  return !a.budget.empty() || !a.memory_high.empty() || !a.memory_max.empty() || !a.on_oom.empty() || a.restart ||
         !a.host_floor.empty();
}

Result<guard::GuardOptions> options_for(const cli::RunOptions& o, pid_t child) {
  const auto& a = args();
  guard::GuardOptions g;
  g.pid = child;
  SPARK_TRY_VOID(cli::fill_guard_options(a, g));
  g.until_port = o.window.until_port;
  if (a.settle_after.empty() && !g.until_port.empty())
    g.settle_on_ready = true;  // the load is done when the server accepts
  g.restart = false;           // run starts the command again itself
  return g;
}

const cli::RunExtensionRegistration k_guard_extension{{
    "guard",
    [](CLI::App& run, cli::RunOptions&) {
      auto& a = args();
      const char* grp = "Guard (a memory cgroup of its own for the command)";
      cli::add_guard_flags(&run, a, grp);
      run.add_option("--settle-after", a.settle_after,
                     "footprint measured this long after start "
                     "(default: when --until-port accepts)")
          ->group(grp);
      run.add_flag("--restart", a.restart, "start the command again after an OOM kill or a failure")->group(grp);
    },
    [](const cli::Context& ctx, cli::RunOptions& o, pid_t child) -> Result<void> {
      if (!wanted(args())) return {};
      SPARK_TRY(guard::GuardOptions g, options_for(o, child));
      SPARK_TRY(auto r, cli::agent_call(ctx, "guard.add", guard::options_to_json(g)));
      o.extensions["guard"]["id"] = r.value("id", "");
      log_info("guard " + r.value("id", "") + ": " + r["guard"].value("box", ""));
      return {};
    },
    [](const cli::Context&, cli::RunOptions& o, pid_t, int status) -> bool {
      auto& a = args();
      if (!a.restart) return false;
      bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
      bool failed = WIFEXITED(status) && WEXITSTATUS(status) != 0;
      if (!killed && !failed) return false;  // a clean exit, or a signal passed on by run: done
      auto window = parse_duration(a.restart_window).value_or(std::chrono::minutes(5));
      auto backoff = parse_duration(a.restart_backoff).value_or(std::chrono::milliseconds(250));
      auto now = std::chrono::steady_clock::now();
      std::erase_if(a.restarts, [&](auto t) { return now - t > window; });
      if (static_cast<int>(a.restarts.size()) >= a.restart_max) {
        log_error("restart loop stopped at its cap: " + std::to_string(a.restarts.size()) + " restarts within " +
                  format_duration(window));
        return false;
      }
      if (!a.restarts.empty() && backoff.count() > 0) {
        auto d = backoff * (1 << std::min<size_t>(a.restarts.size() - 1, 7));
        std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(d, std::chrono::seconds(30)));
      }
      a.restarts.push_back(std::chrono::steady_clock::now());
      log_warning(std::string("the command ") + (killed ? "was killed (SIGKILL)" : "failed") + ": restart " +
                  std::to_string(a.restarts.size()) + " of at most " + std::to_string(a.restart_max));
      o.extensions["guard"].erase("id");
      return true;
    },
}};

}  // namespace
