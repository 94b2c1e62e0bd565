// Verbs register themselves here; main.cpp builds the command line from the registrations.
// A verb file defines `static const spark::cli::Verb k_verb{"name", order, setup}` and nothing else global.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "core/host_paths.h"

namespace spark::cli {

// Exit codes shared by every verb (documented in --help and docs/cli.md).
enum ExitCode : int {
  k_exit_ok = 0,     // done / all checks pass / go
  k_exit_check = 1,  // a check failed: drift, refusal, FAIL
  k_exit_error = 2,  // bad input or a system error; nothing was changed
};
// What each exit code means, for the man page (agent/docgen) and --help.
struct ExitCodeDoc {
  int code;
  const char* meaning;
};
inline constexpr ExitCodeDoc k_exit_codes[] = {
    {k_exit_ok, "done; every check passed; go"},
    {k_exit_check, "a check failed: drift, a refusal (preflight), a FAIL (doctor)"},
    {k_exit_error, "bad input or a system error; nothing was changed"},
};

// What every verb sees: paths (fixture root with --root), output mode, and where to put its exit code.
struct Context {
  HostPaths paths = HostPaths::system();
  bool json = false;
  int exit_code = k_exit_ok;
};

using VerbSetup = std::function<void(CLI::App& app, Context& ctx)>;

struct Verb {
  Verb(std::string name, int order, VerbSetup setup);
};

struct VerbEntry {
  std::string name;
  int order;
  VerbSetup setup;
};
std::vector<VerbEntry>& verbs();

// Output helpers: a table for people, JSON on stdout for scripts.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
void print_json(const nlohmann::json& j);
// An error for a person (stderr) or, with --json, {"error": ...} on stdout; returns k_exit_error.
int report_error(const Context& ctx, const std::string& message);

}  // namespace spark::cli
