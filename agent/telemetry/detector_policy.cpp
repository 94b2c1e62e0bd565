#include "telemetry/detector_policy.h"

#include <stdexcept>
#include <string>
#include <utility>

#include "core/log.h"
#include "profile/profile_options.h"

using spark::profile::profile_options;

namespace spark::telemetry {

DetectorPolicy detector_policy(const HostPaths& paths, DeepTriggerPolicy deep_defaults) {
  DetectorPolicy p;
  p.deep = std::move(deep_defaults);
  std::optional<double> flood_gib_per_s;
  if (auto po = profile_options(paths, std::nullopt); po) {
    for (auto [key, field] :
         {std::pair{"detector.deep_seconds", &p.deep.period}, std::pair{"detector.deep_cooldown_s", &p.deep.cooldown}})
      if (auto v = po->get(key)) {
        std::string why;
        if (auto ms = parse_policy_seconds(*v, &why))
          *field = *ms;
        else
          log_warning(std::string("telemetry: ") + key + " " + why + "; using the default");
      }
    if (auto v = po->get("detector.stall_ms")) {
      try {
        // Fractions allowed ("0.05" = 50 us); the probes take nanoseconds.
        size_t used = 0;
        double ms = std::stod(*v, &used);
        if (used != v->size() || !(ms > 0) || ms > 3.6e6) throw std::invalid_argument(*v);
        p.probe_stall = std::chrono::nanoseconds(static_cast<int64_t>(ms * 1e6));
      } catch (...) {
        log_warning("telemetry: detector.stall_ms '" + *v + "' is not a number of milliseconds; using the default");
      }
    }
    if (auto v = po->get("detector.flood_gib_per_s")) {
      try {
        flood_gib_per_s = std::stod(*v);
      } catch (...) {
        log_warning("telemetry: detector.flood_gib_per_s '" + *v + "' is not a number; using the default");
      }
    }
  }
  p.thresholds.task_stall = std::chrono::duration_cast<std::chrono::milliseconds>(p.probe_stall);
  if (flood_gib_per_s && *flood_gib_per_s > 0)
    p.thresholds.pagecache_growth_bytes_per_s =
        static_cast<uint64_t>(*flood_gib_per_s * static_cast<double>(1ull << 30));
  // A flood is judged while a load window is open (the agent follows the window events; the CLI
  // without an agent reads the journal).
  p.thresholds.pagecache_only_in_window = true;
  return p;
}

}  // namespace spark::telemetry
