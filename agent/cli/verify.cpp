// spark-tune verify [PROFILE]: exit 0 all match, 1 drift, 2 error.
#include <iostream>

#include "cli/registry.h"
#include "profile/profile_ops.h"

using spark::tune::HostActuator;

using spark::profile::verify_profile;

namespace spark::cli {
namespace {

int do_verify(Context& ctx, const std::string& name) {
  HostActuator act(ctx.paths);
  auto r = verify_profile(ctx.paths, act, name.empty() ? std::nullopt : std::optional<std::string>(name));
  if (!r) return report_error(ctx, r.error().what());
  if (ctx.json) {
    print_json(to_json(*r));
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& row : r->rows) rows.push_back({row.key, row.expected, row.actual, row.status});
    print_table({"KEY", "EXPECTED", "ACTUAL", "STATUS"}, rows);
    for (const auto& row : r->rows)
      for (const auto& s : row.set_by) std::cout << row.key << ": " << s << "\n";
    std::cout << (r->drift()
                      ? "drift: re-apply with `spark-tune apply " + r->profile + "`, or remove the other setting\n"
                      : "profile " + r->profile + " holds\n");
  }
  return r->drift() ? k_exit_check : k_exit_ok;
}

const Verb k_verb{"verify", 11, [](CLI::App& app, Context& ctx) {
                    auto name = std::make_shared<std::string>();
                    auto* cmd = app.add_subcommand(
                        "verify",
                        "compare the applied (or named) profile with the kernel: exit 0 match, 1 drift, 2 error");
                    cmd->add_option("profile", *name, "profile to check instead of the applied one");
                    cmd->callback([&ctx, name] { ctx.exit_code = do_verify(ctx, *name); });
                  }};

}  // namespace
}  // namespace spark::cli
