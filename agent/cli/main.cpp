// spark-tune: one executable, one file per verb (see registry.h).
#include <algorithm>
#include <iostream>

#include "cli/registry.h"
#include "cli/verb_choice.h"
#include "core/log.h"

int main(int argc, char** argv) {
  using namespace spark;
  cli::Context ctx;
  CLI::App app{"spark-tune: keeps model-serving hosts alive through model loads.\n"
               "Exit codes: 0 ok, 1 a check failed (drift, refusal, FAIL), 2 bad input or system error.",
               "spark-tune"};
  app.set_version_flag("--version", SPARK_TUNE_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  std::string root;
  std::string state_dir;
  app.add_option("--root", root, "run against a fixture tree instead of the host (testing)")->group("");
  app.add_option("--state-dir", state_dir, "journal directory (default /var/lib/spark-tune)");
  app.add_flag("--json", ctx.json, "machine-readable output on stdout");

  // Only the verb asked for gets its parser built (building all of them was most of the start-up
  // time: docs/benchmarks.md); the top-level help, an unknown verb and a mistake build them all,
  // so the listing and CLI11's messages stay as they were.
  auto& list = cli::verbs();
  std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  std::vector<std::string> names;
  for (const auto& v : list) names.push_back(v.name);
  auto wanted = cli::verbs_to_build(argc, argv, names);
  for (auto& v : list)
    if (wanted.all || v.name == wanted.verb) v.setup(app, ctx);

  // Paths must be settled before any verb callback runs: a parse callback on the app runs first.
  app.parse_complete_callback([&] {
    if (!root.empty()) ctx.paths = HostPaths::under(root);
    if (!state_dir.empty()) ctx.paths.state = state_dir;
    if (ctx.json) set_log_level(LogLevel::warning);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : cli::k_exit_error;
  } catch (const std::exception& e) {
    std::cerr << "spark-tune: " << e.what() << std::endl;
    return cli::k_exit_error;
  }
  return ctx.exit_code;
}
