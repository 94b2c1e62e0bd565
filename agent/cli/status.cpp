// spark-tune status: the applied profile, drift, and what the journal holds.
#include <iostream>

#include "cli/registry.h"
#include "profile/profile_ops.h"

using spark::state::read_journal;

using spark::tune::HostActuator;

using spark::profile::VerifyOutcome, spark::profile::k_profile_owner, spark::profile::verify_profile;

namespace spark::cli {
namespace {

int do_status(Context& ctx) {
  HostActuator act(ctx.paths);
  auto j = read_journal(ctx.paths);
  if (!j) return report_error(ctx, j.error().what());
  std::optional<VerifyOutcome> v;
  if (j->owners.contains(k_profile_owner)) {
    auto r = verify_profile(ctx.paths, act, std::nullopt);
    if (r) v = *r;
  }
  if (ctx.json) {
    print_json({{"profile", j->owners.contains(k_profile_owner) ? j->owners[k_profile_owner] : nlohmann::json()},
                {"verify", v ? to_json(*v) : nlohmann::json()},
                {"journal", to_json(*j)}});
    return k_exit_ok;
  }
  if (!v)
    std::cout << "profile: none applied\n";
  else
    std::cout << "profile: " << v->profile << (v->drift() ? " (DRIFT: run `spark-tune verify`)" : " (holds)") << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& rec : j->targets)
    for (const auto& l : rec.layers)
      rows.push_back({rec.target.display(), l.owner, l.previous.value_or("(absent)").substr(0, 40),
                      l.value.value_or("(absent)").substr(0, 40)});
  if (rows.empty()) {
    std::cout << "journal: empty (the host is as spark-tune found it)\n";
  } else {
    std::cout << "journal (" << ctx.paths.journal_file().string() << "):\n";
    print_table({"TARGET", "OWNER", "ORIGINAL", "SET TO"}, rows);
  }
  return k_exit_ok;
}

const Verb k_verb{"status", 13, [](CLI::App& app, Context& ctx) {
                    app.add_subcommand("status", "applied profile, drift and the change journal")->callback([&ctx] {
                      ctx.exit_code = do_status(ctx);
                    });
                  }};

}  // namespace
}  // namespace spark::cli
