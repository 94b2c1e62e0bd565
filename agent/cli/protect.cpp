// spark-tune protect UNIT... [--undo]: systemd drop-ins that keep units usable under memory pressure.
#include "daemon/protect.h"

#include <iostream>

#include "cli/registry.h"
#include "core/units.h"
#include "tune/actuator.h"

using spark::tune::HostActuator;

namespace spark::cli {
namespace {

struct Options {
  std::vector<std::string> units;
  bool undo = false;
  std::string memory_min;
  std::string memory_low;
  int oom_score_adjust = -900;
};

void setup(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "protect",
      "keep units alive under load pressure: MemoryMin, MemoryLow, OOMScoreAdjust, ManagedOOMPreference=avoid");
  cmd->footer(
      "Each drop-in is validated with systemd-analyze verify before it is written to\n"
      "/etc/systemd/system/UNIT.d/50-spark-tune-protect.conf, journaled like every change: --undo, or\n"
      "spark-tune revert, restores exactly what was there. Then: systemctl daemon-reload, and restart\n"
      "services for OOMScoreAdjust. The shipped spark-tune.service protects the agent itself.\n"
      "Exit codes: 0 done, 2 bad input or a system error (nothing changed).");
  cmd->add_option("unit", o->units, "units (sshd.service, user.slice; a bare name means .service)")->required();
  cmd->add_flag("--undo", o->undo, "remove the drop-ins protect wrote");
  cmd->add_option("--memory-min", o->memory_min, "hard memory floor (default 256M)");
  cmd->add_option("--memory-low", o->memory_low, "soft memory floor (default 1G)");
  cmd->add_option("--oom-score-adjust", o->oom_score_adjust, "OOMScoreAdjust for services (default -900)");
  cmd->callback([o, &ctx] {
    Result<std::vector<ProtectChange>> r = std::vector<ProtectChange>{};
    if (o->undo) {
      HostActuator act(ctx.paths);
      r = unprotect_units(ctx.paths, act, o->units);
    } else {
      ProtectSpec spec;
      for (auto [text, field, name] : {std::tuple{o->memory_min, &spec.memory_min, "--memory-min"},
                                       std::tuple{o->memory_low, &spec.memory_low, "--memory-low"}}) {
        if (text.empty()) continue;
        auto v = parse_size(text);
        if (!v) {
          ctx.exit_code = report_error(ctx, with_context(v.error(), name).what());
          return;
        }
        *field = *v;
      }
      if (spec.memory_low < spec.memory_min) spec.memory_low = spec.memory_min;
      if (o->oom_score_adjust < -1000 || o->oom_score_adjust > 0) {
        ctx.exit_code = report_error(ctx, "--oom-score-adjust must be between -1000 and 0");
        return;
      }
      spec.oom_score_adjust = o->oom_score_adjust;
      HostActuator act(ctx.paths);
      r = protect_units(ctx.paths, act, o->units, spec);
    }
    if (!r) {
      ctx.exit_code = report_error(ctx, r.error().what());
      return;
    }
    if (ctx.json) {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& c : *r) a.push_back({{"unit", c.unit}, {"path", c.path.string()}, {"changed", c.changed}});
      print_json({{"undo", o->undo}, {"units", a}});
    } else {
      for (const auto& c : *r)
        std::cout << (o->undo ? (c.changed ? "removed " : "nothing to remove ") : (c.changed ? "wrote " : "unchanged "))
                  << c.path.string() << '\n';
      std::cout << "next: systemctl daemon-reload";
      if (!o->undo) std::cout << ", and restart the services for OOMScoreAdjust to apply";
      std::cout << '\n';
    }
  });
}

const Verb k_verb{"protect", 75, setup};

}  // namespace
}  // namespace spark::cli
