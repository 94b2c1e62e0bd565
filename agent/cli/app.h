// The whole command line of spark-tune: global options and every registered verb. main.cpp parses
// with it; the documentation generator (agent/docgen) writes the man page and the shell completion
// from the same definitions, so they never drift from what the binary accepts.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "cli/registry.h"

namespace spark::cli {

inline constexpr const char* k_app_description =
    "spark-tune: keeps model-serving hosts alive through model loads.\n"
    "Exit codes: 0 ok, 1 a check failed (drift, refusal, FAIL), 2 bad input or system error.";

struct GlobalOptions {
  std::string root;       // --root: a fixture tree instead of the host (hidden; testing)
  std::string state_dir;  // --state-dir
};

// Adds the global options and every verb (in their order) to `app`, and the parse callback that
// settles ctx.paths before any verb runs. With `only`, just the verbs it names get their parser
// (main() builds the one asked for: cli/verb_choice.h); the generator builds them all.
void build_app(CLI::App& app, Context& ctx, GlobalOptions& global,
               const std::function<bool(const std::string&)>& only = {});

}  // namespace spark::cli
