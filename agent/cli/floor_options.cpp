#include "cli/floor_options.h"

#include <sstream>

using spark::window::FloorAsk, spark::window::floor_ask_from_json, spark::window::floor_ask_to_json;

namespace spark::cli {

void add_floor_options(CLI::App& app, FloorCliOptions& o, const std::string& force_flag) {
  app.add_option("--free-floor", o.free_floor,
                 "act when free memory (MemFree: what the GPU driver allocates from) falls below SIZE or N% of RAM: "
                 "evict the files, drop clean cache, compact, pause, stop (default: the profile's on a "
                 "unified-memory host; off turns it off)")
      ->type_name("SIZE|N%");
  app.add_option("--available-floor", o.available_floor,
                 "the same ladder when MemAvailable falls below SIZE or N% of RAM")
      ->type_name("SIZE|N%");
  app.add_option("--on-floor", o.on_floor,
                 "the floor's last step runs this command (its words split on blanks, no shell; SPARK_TUNE_WINDOW "
                 "and SPARK_TUNE_PID set) instead of SIGTERM then SIGKILL")
      ->type_name("CMD");
  app.add_flag(force_flag, o.force, "begin even when memory is already below a floor");
}

Result<std::optional<FloorAsk>> floor_ask_of(const FloorCliOptions& o) {
  FloorAsk a;
  a.free = o.free_floor;
  a.available = o.available_floor;
  a.force = o.force;
  std::istringstream in(o.on_floor);
  std::string w;
  while (in >> w) a.on_floor.push_back(w);
  if (!o.on_floor.empty() && a.on_floor.empty()) return input_error("--on-floor: the command is empty");
  if (a.empty()) return std::optional<FloorAsk>();
  // Sizes and shares checked here too, so bad input never reaches the agent.
  SPARK_TRY(FloorAsk checked, floor_ask_from_json(floor_ask_to_json(a)));
  return std::optional<FloorAsk>(checked);
}

}  // namespace spark::cli
