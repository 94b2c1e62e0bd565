// The man page and the shell completion of spark-tune, written from the CLI11 definitions that
// parse its command line (cli/app.h): every visible verb, sub-verb and option, and the exit codes.
// Used at build time by spark-tune-docgen (agent/docgen) and by the tests; never kept by hand.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace spark::cli {

// Every visible command path under the app, depth first in definition order:
// {"apply"}, {"window"}, {"window", "begin"}, ...
std::vector<std::vector<std::string>> command_paths(const CLI::App& app);

std::string render_man(const CLI::App& app, const std::string& version);
std::string render_bash_completion(const CLI::App& app);
std::string render_zsh_completion(const CLI::App& app);

}  // namespace spark::cli
