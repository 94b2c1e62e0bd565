// spark-tune doctor [CHECK...]: are the host's protections in place? Exit 0 no FAIL, 1 any FAIL, 2 bad input.
#include "doctor/doctor.h"

#include <iostream>

#include "cli/registry.h"

namespace spark::cli {
namespace {

void setup(CLI::App& app, Context& ctx) {
  auto names = std::make_shared<std::vector<std::string>>();
  auto units = std::make_shared<std::vector<std::string>>();
  std::string list;
  for (const auto& c : doctor::checks()) list += std::string("\n  ") + c.name + ": " + c.about;
  auto* cmd =
      app.add_subcommand("doctor", "check that the host's protections are in place (OK / WARN / FAIL with the fix)");
  cmd->footer("Checks:" + list + "\nExit codes: 0 no FAIL, 1 any FAIL, 2 bad input.");
  cmd->add_option("check", *names, "checks to run (all by default)");
  cmd->add_option("--unit", *units,
                  "units the protection check expects protected (default: the agent, ssh, user.slice)");
  cmd->callback([names, units, &ctx] {
    doctor::Env env;
    env.paths = ctx.paths;
    env.protected_units = *units;
    if (auto active = doctor::read_active_profile(ctx.paths))
      env.active_profile = *active;
    else
      env.journal_error = active.error().what();
    auto findings = doctor::run_checks(env, *names);
    if (!findings) {
      ctx.exit_code = report_error(ctx, findings.error().what());
      return;
    }
    bool fail = doctor::any_fail(*findings);
    if (ctx.json) {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& f : *findings)
        a.push_back(
            {{"check", f.check}, {"status", doctor::status_name(f.status)}, {"message", f.message}, {"fix", f.fix}});
      print_json({{"ok", !fail}, {"findings", a}});
    } else {
      for (const auto& f : *findings) {
        std::cout << doctor::status_name(f.status)
                  << std::string(5 - std::string(doctor::status_name(f.status)).size(), ' ') << f.check << ": "
                  << f.message << '\n';
        if (!f.fix.empty()) std::cout << "      fix: " << f.fix << '\n';
      }
    }
    ctx.exit_code = fail ? k_exit_check : k_exit_ok;
  });
}

const Verb k_verb{"doctor", 70, setup};

}  // namespace
}  // namespace spark::cli
