// spark-tune apply PROFILE [--dry-run] [--persist] [--force]
#include <iostream>

#include "cli/registry.h"
#include "cli/report_event.h"
#include "profile/profile_ops.h"

using spark::tune::HostActuator;

using spark::profile::ApplyRequest, spark::profile::apply_profile;

namespace spark::cli {
namespace {

int do_apply(Context& ctx, const ApplyRequest& req) {
  HostActuator act(ctx.paths);
  auto r = apply_profile(ctx.paths, act, req);
  if (!r) return report_error(ctx, r.error().what());
  const auto& o = *r;
  if (!req.dry_run) {
    size_t written = 0;
    nlohmann::json results = nlohmann::json::array();
    for (const auto& c : o.results) {
      written += c.written ? 1 : 0;
      results.push_back(to_json(c));
    }
    Event e;
    e.source = EventSource::profile;
    e.type = "profile_applied";
    e.subject = o.resolved.name;
    e.summary = "applied " + o.resolved.name + ": " + std::to_string(written) + " value(s) changed, " +
                std::to_string(o.resolved.settings.size()) + " key(s) held";
    e.hint = "spark-tune revert restores the originals";
    e.data = {{"profile", o.resolved.name},
              {"changed", written},
              {"held", o.resolved.settings.size()},
              {"persisted", o.persisted},
              {"results", results}};
    report_event(ctx, e);
  }
  if (ctx.json) {
    nlohmann::json results = nlohmann::json::array();
    for (const auto& c : o.results) results.push_back(to_json(c));
    nlohmann::json overrides = nlohmann::json::array();
    for (const auto& s : o.boot_overrides)
      overrides.push_back({{"key", s.key}, {"value", s.value}, {"source", s.source}});
    print_json({{"profile", to_json(o.resolved)},
                {"dry_run", req.dry_run},
                {"guardrails", o.guardrails},
                {"results", results},
                {"persisted", o.persisted},
                {"boot_overrides", overrides}});
    return k_exit_ok;
  }
  if (req.dry_run) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : o.resolved.settings) rows.push_back({s.key, s.current, s.value, s.action});
    print_table({"KEY", "CURRENT", "TARGET", "ACTION"}, rows);
    for (const auto& f : o.persisted) std::cout << "would write " << f << "\n";
    for (const auto& g : o.guardrails) std::cout << "guardrail: " << g << " (apply refuses without --force)\n";
    std::cout << "dry run: nothing changed\n";
  } else {
    size_t written = 0;
    for (const auto& c : o.results) written += c.written ? 1 : 0;
    std::cout << "applied " << o.resolved.name << ": " << written << " value(s) changed, " << o.resolved.settings.size()
              << " key(s) held; `spark-tune revert` restores the originals\n";
    for (const auto& f : o.persisted) std::cout << "persisted in " << f << "\n";
  }
  for (const auto& s : o.boot_overrides)
    std::cerr << "warning: at boot " << s.source << " sets " << s.key << " = " << s.value
              << " after spark-tune's drop-in\n";
  return k_exit_ok;
}

const Verb k_verb{
    "apply", 10, [](CLI::App& app, Context& ctx) {
      auto req = std::make_shared<ApplyRequest>();
      auto* cmd =
          app.add_subcommand("apply", "apply a sysctl profile as one transaction (exit 0 applied, 2 refused/error)");
      cmd->add_option("profile", req->profile, "profile name, or a .toml file")->required();
      cmd->add_flag("--dry-run", req->dry_run, "print key / current / target / action; change nothing");
      cmd->add_flag("--persist", req->persist, "also write /etc/sysctl.d/90-spark-tune.conf (revert removes it)");
      cmd->add_flag("--force", req->force, "apply values the guardrails refuse");
      cmd->callback([&ctx, req] { ctx.exit_code = do_apply(ctx, *req); });
    }};

}  // namespace
}  // namespace spark::cli
