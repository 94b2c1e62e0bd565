// spark-tune revert: every original value back from the journal; idempotent.
// --stop-agent first stops a running agent (its load windows end and their values are restored):
// what the package's prerm runs, so that no setting stays changed after the package is removed.
// Guards end first, their processes moved back out of their box (they keep running), so that the
// box can be removed; then everything else in the journal is restored. It says what it did.
#include <iostream>

#include "cli/registry.h"
#include "cli/report_event.h"
#include "daemon/protocol.h"
#include "daemon/stop_agent.h"
#include "guard/supervisor.h"
#include "profile/profile_ops.h"

using spark::tune::HostActuator, spark::tune::Tuner;

namespace spark::cli {
namespace {

struct RevertOptions {
  bool stop_agent = false;
};

int do_revert(Context& ctx, const RevertOptions& opt) {
  nlohmann::json report = nlohmann::json::object();
  std::vector<std::string> said;
  std::vector<std::string> failed;

  if (opt.stop_agent) {
    // The windows the agent holds end when it stops: ask it which, so the removal can say so
    // (only an agent that runs: a connection to an idle socket unit would start one).
    nlohmann::json ending = nlohmann::json::array();
    std::vector<std::string> window_lines;
    if (auto running = daemon::running_agent(ctx.paths); running.ok() && *running) {
      using namespace std::chrono_literals;
      if (auto l = daemon::call(ctx.paths, "window.list", nlohmann::json::object(), 5s); l.ok() && l->is_array())
        for (const auto& w : *l) {
          ending.push_back({{"id", w.value("id", "")}, {"label", w.value("label", "")}});
          window_lines.push_back("load window " + w.value("id", "") +
                                 (w.value("label", "").empty() ? "" : " (" + w.value("label", "") + ")") +
                                 " ended with the agent: its values were restored");
        }
    }
    auto stopped = daemon::stop_agent(ctx.paths);
    if (!stopped) {
      failed.push_back(stopped.error().what());
    } else if (*stopped) {
      report["agent_stopped"] = **stopped;
      said.push_back("stopped the agent (pid " + std::to_string(**stopped) +
                     "): its load windows ended and their values were restored");
      said.insert(said.end(), window_lines.begin(), window_lines.end());
      report["windows_ended"] = ending;
    } else {
      report["agent_stopped"] = nullptr;
    }
  }

  HostActuator act(ctx.paths);
  Tuner tuner(ctx.paths, act);
  nlohmann::json guards = nlohmann::json::array();
  auto list = guard::list_guards(ctx.paths);
  if (!list) return report_error(ctx, list.error().what());
  for (const auto& g : *list) {
    auto r = guard::end_guard(ctx.paths, tuner, g.id);
    std::error_code ec;
    bool running = g.pid > 0 && fs::exists(ctx.paths.proc / std::to_string(g.pid), ec);
    guards.push_back({{"guard", g.id}, {"pid", g.pid}, {"running", running}, {"ok", r.ok()}});
    if (!r) {
      failed.push_back(r.error().what());
      continue;
    }
    said.push_back(
        "guard " + g.id + " ended: " +
        (running ? "process " + std::to_string(g.pid) + " keeps running, outside its box" : "its process had exited"));
  }
  report["guards_ended"] = guards;

  auto r = tuner.revert_all();
  if (!r) failed.push_back(r.error().what());
  size_t n = 0;
  nlohmann::json arr = nlohmann::json::array();
  if (r) {
    for (const auto& c : *r) {
      arr.push_back(to_json(c));
      n += c.written ? 1 : 0;
    }
  }
  report["restored"] = arr;
  if (r) {
    Event e;
    e.source = EventSource::profile;
    e.type = "profile_reverted";
    e.summary = r->empty() ? "revert: nothing to revert" : "reverted: " + std::to_string(n) + " value(s) restored";
    e.data = {{"restored", n}, {"targets", arr.size()}, {"results", arr}};
    report_event(ctx, e);
  }
  if (!failed.empty()) report["errors"] = failed;

  if (ctx.json) {
    print_json(report);
  } else {
    for (const auto& s : said) std::cout << s << "\n";
    if (r)
      std::cout << (r->empty() ? "nothing to revert" : "reverted: " + std::to_string(n) + " value(s) restored") << "\n";
  }
  for (const auto& f : failed) std::cerr << "spark-tune: " << f << std::endl;
  return failed.empty() ? k_exit_ok : k_exit_error;
}

const Verb k_verb{"revert", 12, [](CLI::App& app, Context& ctx) {
                    auto opt = std::make_shared<RevertOptions>();
                    auto* cmd = app.add_subcommand(
                        "revert",
                        "restore every value spark-tune changed (profiles, windows, guards) from the journal");
                    cmd->add_flag("--stop-agent", opt->stop_agent,
                                  "first stop a running agent (its load windows end and their values are restored); "
                                  "guards end with their processes left running outside their box");
                    cmd->callback([&ctx, opt] { ctx.exit_code = do_revert(ctx, *opt); });
                  }};

}  // namespace
}  // namespace spark::cli
