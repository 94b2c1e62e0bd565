// spark-tune-docgen man|bash|zsh OUTPUT: the man page or a shell completion of spark-tune, from the
// very CLI definitions the executable parses with (the verb files are linked in here too). Run at
// build time; a cross build runs the build host's own copy (install/build-deb).
#include <fstream>
#include <iostream>
#include <string>

#include "cli/app.h"
#include "cli/doc_render.h"

int main(int argc, char** argv) {
  using namespace spark;
  if (argc != 3) {
    std::cerr << "usage: spark-tune-docgen man|bash|zsh OUTPUT\n";
    return 2;
  }
  cli::Context ctx;
  cli::GlobalOptions global;
  CLI::App app{cli::k_app_description, "spark-tune"};
  cli::build_app(app, ctx, global);
  std::string kind = argv[1];
  std::string text;
  if (kind == "man")
    text = cli::render_man(app, SPARK_TUNE_VERSION);
  else if (kind == "bash")
    text = cli::render_bash_completion(app);
  else if (kind == "zsh")
    text = cli::render_zsh_completion(app);
  else {
    std::cerr << "spark-tune-docgen: unknown kind '" << kind << "' (man, bash or zsh)\n";
    return 2;
  }
  std::ofstream out(argv[2], std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    std::cerr << "spark-tune-docgen: cannot write " << argv[2] << "\n";
    return 2;
  }
  return 0;
}
