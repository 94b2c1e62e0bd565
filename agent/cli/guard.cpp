// spark-tune guard: a server in a memory cgroup of its own with a host-relative budget, a warning
// before it runs out, and hook / restart / readiness when the kernel kills it anyway.
//
// `spark-tune guard --pid PID` hands the guard to the agent (started when none runs) and returns
// its id; `guard wait server_ready --guard ID` waits for its events. With --foreground the
// supervisor runs in this process instead (no agent): events are printed as JSON lines on stdout;
// Ctrl-C / SIGTERM ends the guard (values restored, cgroup removed); a kill -9 leaves the guard
// journaled and enforced by the kernel, and `guard resume` (or the agent's start) takes it over.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <memory>

#include "cli/guard_flags.h"
#include "cli/guard_wait.h"
#include "cli/registry.h"
#include "cli/window_options.h"
#include "core/event_log.h"
#include "core/log.h"
#include "core/units.h"
#include "daemon/protocol.h"
#include "guard/supervisor.h"
#include "guard/unit.h"
#include "state/journal.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

using spark::state::ensure_state_dir;

using spark::tune::HostActuator, spark::tune::Tuner;

namespace spark::cli {
namespace {

struct GuardArgs {
  int pid = 0;
  std::string unit, cgroup;
  GuardFlags flags;
  bool undo = false, foreground = false;
  std::string until_port, events_file;
  std::string end_id;
  std::string wait_type, wait_guard, wait_timeout = "60s";
};

Result<guard::GuardOptions> to_options(const GuardArgs& a) {
  guard::GuardOptions o;
  o.pid = a.pid;
  o.cgroup = a.cgroup;
  SPARK_TRY_VOID(fill_guard_options(a.flags, o));
  o.until_port = a.until_port;
  return o;
}

// The foreground loop: the supervisor's fds plus a signalfd for SIGINT/SIGTERM.
int run_foreground(Context& ctx, guard::GuardSupervisor& sup, bool end_on_signal) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  while (sup.active()) {
    auto fds = sup.poll_fds();
    fds.push_back({sfd, POLLIN, 0});
    int n = ::poll(fds.data(), fds.size(), poll_timeout_ms(sup.next_timer(), LoopClock::now()));
    if (n > 0) {
      if (fds.back().revents) {
        signalfd_siginfo si{};
        (void)!::read(sfd, &si, sizeof si);
        log_info("signal " + std::to_string(si.ssi_signo) + ": ending the guard(s)");
        if (end_on_signal)
          for (const auto& id : sup.ids())
            if (auto r = sup.end(id, "signal"); !r) {
              ::close(sfd);
              return report_error(ctx, describe(r.error()));
            }
        break;
      }
      fds.pop_back();
      for (auto& p : fds)
        if (p.revents) sup.on_ready(p.fd, LoopClock::now());
    }
    sup.tick();
  }
  ::close(sfd);
  return k_exit_ok;
}

// A foreground guard keeps its own event log (no agent): numbered as the agent's are, with the
// probes' OOM merge rules; each event goes to stdout and the --events-file as one JSON line.
EventSink make_sink(const std::string& events_file) {
  auto file = std::make_shared<std::ofstream>();
  if (!events_file.empty()) file->open(events_file, std::ios::app);
  auto log = std::make_shared<EventLog>();
  log->on_append([file](const Event& e) {
    std::string line = e.to_line();
    std::cout << line << std::endl;
    if (file->is_open()) *file << line << std::endl;
  });
  return [log](const Event& e) { log->append(e); };
}

int do_guard(Context& ctx, const GuardArgs& a) {
  int targets = (a.pid > 0) + !a.unit.empty() + !a.cgroup.empty();
  if (targets != 1) return report_error(ctx, "give exactly one of --pid PID, --unit UNIT or --cgroup PATH");
  HostActuator act(ctx.paths);
  Tuner tuner(ctx.paths, act);
  if (auto s = ensure_state_dir(ctx.paths); !s) return report_error(ctx, describe(s.error()));
  if (!a.unit.empty()) {
    if (a.undo) {
      auto r = guard::undo_unit_dropin(ctx.paths, tuner, a.unit);
      if (!r) return report_error(ctx, describe(r.error()));
      if (ctx.json)
        print_json({{"unit", a.unit}, {"undone", true}});
      else
        std::cout << "removed the guard drop-in of " << a.unit << "; run systemctl daemon-reload" << std::endl;
      return k_exit_ok;
    }
    auto o = to_options(a);
    if (!o) return report_error(ctx, describe(o.error()));
    auto r = guard::write_unit_dropin(ctx.paths, tuner, a.unit, *o);
    if (!r) return report_error(ctx, describe(r.error()));
    if (ctx.json)
      print_json({{"unit", a.unit}, {"dropin", r->path}, {"content", r->content}});
    else
      std::cout << "wrote " << r->path << " (validated with systemd-analyze verify)\n"
                << r->content << "run systemctl daemon-reload and restart " << a.unit << " to apply it" << std::endl;
    return k_exit_ok;
  }
  if (a.undo) return report_error(ctx, "--undo goes with --unit (end other guards with: spark-tune guard end ID)");
  auto o = to_options(a);
  if (!o) return report_error(ctx, describe(o.error()));
  if (!a.foreground && !a.events_file.empty())
    return report_error(ctx,
                        "--events-file is written by a guard held in the foreground only (--foreground); a "
                        "guard held by the agent logs to the agent's event stream: read it with `spark-tune "
                        "events --json --source guard >> " +
                            a.events_file + "` (it follows until interrupted)");
  if (!a.foreground) {
    auto r = agent_call(ctx, "guard.add", guard::options_to_json(*o));
    if (!r) return agent_error(ctx, r.error());
    if (ctx.json)
      print_json(*r);
    else
      std::cout << "guard " << r->value("id", "") << ": process " << a.pid << " in " << (*r)["guard"].value("box", "")
                << ", limit " << format_size((*r)["guard"].value("limit", uint64_t{0}))
                << " (events: spark-tune guard wait TYPE --guard " << r->value("id", "") << ")" << std::endl;
    return k_exit_ok;
  }
  guard::GuardSupervisor sup(ctx.paths, tuner, make_sink(a.events_file));
  auto id = sup.add(*o);
  if (!id) return report_error(ctx, describe(id.error()));
  log_info("guard " + *id + " active in the foreground (Ctrl-C ends it and restores everything)");
  return run_foreground(ctx, sup, true);
}

int do_list(Context& ctx) {
  auto gs = guard::list_guards(ctx.paths);
  if (!gs) return report_error(ctx, describe(gs.error()));
  if (ctx.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& g : *gs) out.push_back(g.to_json());
    print_json(out);
    return k_exit_ok;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& g : *gs)
    rows.push_back({g.id, std::to_string(g.pid), g.box, g.settled ? format_size(g.limit) : "(settling)",
                    format_size(g.budget), std::to_string(g.restarts_ms.size()), g.opt.until_port});
  print_table({"ID", "PID", "CGROUP", "LIMIT", "BUDGET", "RESTARTS", "PORT"}, rows);
  return k_exit_ok;
}

int do_end(Context& ctx, const std::string& id) {
  // The agent holds its guards; a guard it does not know (a foreground one, or no agent) is ended
  // here from the journal, and the process holding it notices within a second.
  auto via_agent = daemon::call(ctx.paths, "guard.end", nlohmann::json{{"id", id}});
  if (!via_agent) {
    HostActuator act(ctx.paths);
    Tuner tuner(ctx.paths, act);
    auto r = guard::end_guard(ctx.paths, tuner, id);
    if (!r) return report_error(ctx, describe(r.error()));
  }
  if (ctx.json)
    print_json({{"guard", id}, {"ended", true}});
  else
    std::cout << "guard " << id << " ended: its values are restored and its cgroup removed" << std::endl;
  return k_exit_ok;
}

int do_wait(Context& ctx, const GuardArgs& a) {
  auto timeout = duration_arg("--timeout", a.wait_timeout);
  if (!timeout) return report_error(ctx, describe(timeout.error()));
  return wait_guard_event(ctx, a.wait_type, a.wait_guard, *timeout);
}

int do_resume(Context& ctx, const std::string& events_file) {
  HostActuator act(ctx.paths);
  Tuner tuner(ctx.paths, act);
  guard::GuardSupervisor sup(ctx.paths, tuner, make_sink(events_file));
  auto n = sup.resume();
  if (!n) return report_error(ctx, describe(n.error()));
  log_info("resumed " + std::to_string(*n) + " guard(s) in the foreground");
  return run_foreground(ctx, sup, true);
}

void setup(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<GuardArgs>();
  auto* g = app.add_subcommand("guard",
                               "put a server in a memory cgroup of its own with a host-relative budget "
                               "(held by the agent; --foreground holds it in this process)");
  g->add_option("--pid", a->pid, "guard this running process (moved into a memory cgroup of its own)")
      ->check(pid_validator());
  g->add_option("--unit", a->unit, "write the equivalent systemd drop-in for this service instead");
  g->add_option("--cgroup", a->cgroup, "guard an existing memory cgroup in place (path in the memory hierarchy)");
  add_guard_flags(g, a->flags);
  g->add_option("--settle-after", a->flags.settle_after, "measure the footprint this long after start (load done)");
  g->add_flag("--restart", a->flags.restart, "restart the server (its command line, cwd and user) after it dies");
  g->add_option("--until-port", a->until_port, "HOST:PORT: a restarted server is back when it accepts (server_ready)");
  g->add_option("--events-file", a->events_file, "also append the events (JSON lines) to this file");
  g->add_flag("--undo", a->undo, "with --unit: remove the drop-in");
  g->add_flag("--foreground", a->foreground, "run the guard in this process instead of the agent (Ctrl-C ends it)");
  auto* list = g->add_subcommand("list", "guards in the journal");
  auto* end = g->add_subcommand("end", "end a guard: processes back, values restored, cgroup removed");
  end->add_option("id", a->end_id, "guard id (see guard list)")->required();
  auto* resume = g->add_subcommand("resume", "take over every journaled guard in the foreground (no agent)");
  auto* wait =
      g->add_subcommand("wait", "wait for a guard event from the agent (server_ready, oom_kill, memory_growth)");
  wait->add_option("type", a->wait_type, "event type")->required();
  wait->add_option("--guard", a->wait_guard, "only this guard's events");
  wait->add_option("--timeout", a->wait_timeout, "give up after this long (exit 1; default 60s)");
  g->require_subcommand(0, 1);
  g->callback([&ctx, a, list, end, resume, wait] {
    if (list->parsed())
      ctx.exit_code = do_list(ctx);
    else if (end->parsed())
      ctx.exit_code = do_end(ctx, a->end_id);
    else if (resume->parsed())
      ctx.exit_code = do_resume(ctx, a->events_file);
    else if (wait->parsed())
      ctx.exit_code = do_wait(ctx, *a);
    else
      ctx.exit_code = do_guard(ctx, *a);
  });
}

const Verb k_verb{"guard", 60, setup};

}  // namespace
}  // namespace spark::cli
