#include "cli/app.h"

#include <algorithm>

#include "core/log.h"

namespace spark::cli {

void build_app(CLI::App& app, Context& ctx, GlobalOptions& global,
               const std::function<bool(const std::string&)>& only) {
  app.set_version_flag("--version", SPARK_TUNE_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--root", global.root, "run against a fixture tree instead of the host (testing)")->group("");
  app.add_option("--state-dir", global.state_dir, "journal directory (default /var/lib/spark-tune)");
  app.add_flag("--json", ctx.json, "machine-readable output on stdout");

  auto& list = verbs();
  std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  for (auto& v : list)
    if (!only || only(v.name)) v.setup(app, ctx);

  // Paths must be settled before any verb callback runs: a parse callback on the app runs first.
  app.parse_complete_callback([&ctx, &global] {
    if (!global.root.empty()) ctx.paths = HostPaths::under(global.root);
    if (!global.state_dir.empty()) ctx.paths.state = global.state_dir;
    if (ctx.json) set_log_level(LogLevel::warning);
  });
}

}  // namespace spark::cli
