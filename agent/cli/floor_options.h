// The floor's options on `window begin` and `run` (issue 14 part 2; window/floor.h).
#pragma once

#include <optional>
#include <string>

#include "cli/registry.h"
#include "core/result.h"
#include "window/floor.h"

namespace spark::cli {

struct FloorCliOptions {
  std::string free_floor;       // SIZE|N%
  std::string available_floor;  // SIZE|N%
  std::string on_floor;         // CMD ARGS... (split on blanks, no shell)
  bool force = false;
};

// force_flag: "--force" on `window begin`; `run` has the guard's --force, so there it is "--floor-force".
void add_floor_options(CLI::App& app, FloorCliOptions& o, const std::string& force_flag);
// nullopt when no floor option was given (the profile decides).
Result<std::optional<window::FloorAsk>> floor_ask_of(const FloorCliOptions& o);

}  // namespace spark::cli
