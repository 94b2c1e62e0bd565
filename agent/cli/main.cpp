// spark-tune: one executable, one file per verb (see registry.h); the command line is cli/app.cpp.
#include <iostream>

#include "cli/app.h"
#include "cli/verb_choice.h"

int main(int argc, char** argv) {
  using namespace spark;
  cli::Context ctx;
  cli::GlobalOptions global;
  CLI::App app{cli::k_app_description, "spark-tune"};
  // Only the verb asked for gets its parser built (building all of them was most of the start-up
  // time: docs/benchmarks.md); the top-level help, an unknown verb and a mistake build them all,
  // so the listing and CLI11's messages stay as they were.
  std::vector<std::string> names;
  for (const auto& v : cli::verbs()) names.push_back(v.name);
  auto wanted = cli::verbs_to_build(argc, argv, names);
  cli::build_app(app, ctx, global, [&](const std::string& name) { return wanted.all || name == wanted.verb; });
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
