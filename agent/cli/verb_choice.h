// Which verbs' command lines main() builds: only the verb asked for. Building every verb's CLI11
// parser at each start was most of spark-tune's own start-up work (docs/benchmarks.md, issue 12);
// a launch script that calls `spark-tune preflight ...` needs preflight's parser only. Everything
// else (no verb: the top-level --help listing or the "a verb is required" error; a word that is
// no verb: CLI11's own message; --help before the verb) builds them all, so what a user sees
// does not change. `--version` alone builds none.
#pragma once

#include <cstring>
#include <string>
#include <vector>

namespace spark::cli {

struct VerbChoice {
  bool all = true;   // build every verb
  std::string verb;  // else only this one (empty: none, for --version)
};

// argv as main() gets it; `names`: the registered verbs. The global options that take a value
// (--root, --state-dir) are skipped with their value, so `--state-dir apply` is no verb.
inline VerbChoice verbs_to_build(int argc, const char* const* argv, const std::vector<std::string>& names) {
  bool help = false, version = false;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--") == 0) break;
    if (std::strcmp(a, "--root") == 0 || std::strcmp(a, "--state-dir") == 0) {
      ++i;
      continue;
    }
    if (a[0] == '-') {
      if (std::strcmp(a, "-h") == 0 || std::strcmp(a, "--help") == 0) help = true;
      if (std::strcmp(a, "--version") == 0) version = true;
      continue;
    }
    for (const auto& n : names)
      if (n == a) return help ? VerbChoice{} : VerbChoice{false, n};
    return {};  // not a verb: CLI11 says so, with every verb known
  }
  if (version && !help) return {false, ""};
  return {};
}

}  // namespace spark::cli
