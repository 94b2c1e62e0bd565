// spark-tune: one executable, one file per verb (see registry.h); the command line is cli/app.cpp.
#include <iostream>

#include "cli/app.h"

int main(int argc, char** argv) {
  using namespace spark;
  cli::Context ctx;
  cli::GlobalOptions global;
  CLI::App app{cli::k_app_description, "spark-tune"};
  cli::build_app(app, ctx, global);
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
