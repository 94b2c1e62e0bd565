// spark-tune revert: every original value back from the journal; idempotent.
#include <iostream>

#include "cli/registry.h"
#include "cli/report_event.h"
#include "profile/profile_ops.h"

namespace spark::cli {
namespace {

int do_revert(Context& ctx) {
  HostActuator act(ctx.paths);
  Tuner tuner(ctx.paths, act);
  auto r = tuner.revert_all();
  if (!r) return report_error(ctx, r.error().what());
  {
    size_t restored = 0;
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& c : *r) {
      restored += c.written ? 1 : 0;
      arr.push_back(to_json(c));
    }
    Event e;
    e.source = EventSource::profile;
    e.type = "profile_reverted";
    e.summary = r->empty() ? "revert: nothing to revert" : "reverted: " + std::to_string(restored) + " value(s) restored";
    e.data = {{"restored", restored}, {"targets", arr.size()}, {"results", arr}};
    report_event(ctx, e);
  }
  if (ctx.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& c : *r) arr.push_back(to_json(c));
    print_json({{"restored", arr}});
    return k_exit_ok;
  }
  size_t n = 0;
  for (const auto& c : *r) n += c.written ? 1 : 0;
  std::cout << (r->empty() ? "nothing to revert" : "reverted: " + std::to_string(n) + " value(s) restored") << "\n";
  return k_exit_ok;
}

const Verb verb{"revert", 12, [](CLI::App& app, Context& ctx) {
  app.add_subcommand("revert", "restore every value spark-tune changed (profiles, windows, guards) from the journal")
      ->callback([&ctx] { ctx.exit_code = do_revert(ctx); });
}};

}  // namespace
}  // namespace spark::cli
