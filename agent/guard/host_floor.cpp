#include "guard/host_floor.h"

#include "gpu/unified.h"
#include "profile/profile_options.h"
#include "window/floor.h"

using spark::profile::profile_options;

using spark::window::parse_floor;

using spark::gpu::unified_memory_host;

namespace spark::guard {

Result<uint64_t> resolve_host_floor(const std::string& asked, const std::optional<std::string>& profile_default,
                                    const MemInfo& host, const std::function<bool()>& unified) {
  if (!asked.empty()) return parse_floor(asked, host.total(), "--host-floor");
  if (!unified()) return uint64_t{0};
  std::string text = profile_default.value_or(k_default_host_floor);
  auto r = parse_floor(text, host.total(), "--host-floor");
  if (!r) return with_context(r.error(), "the profile's guard.host_floor");
  return r;
}

Result<uint64_t> resolve_host_floor(const HostPaths& paths, const std::string& asked, const MemInfo& host) {
  std::optional<std::string> prof;
  if (asked.empty())
    if (auto p = profile_options(paths, std::nullopt); p) prof = p->get("guard.host_floor");
  return resolve_host_floor(asked, prof, host, [] { return unified_memory_host(); });
}

std::optional<HostFloorCrossing> HostFloorWatch::add(uint64_t available, Clock::time_point now) {
  if (!floor_) return std::nullopt;
  if (available >= floor_ + floor_ / 8) {
    below_ = false;
    return std::nullopt;
  }
  if (available >= floor_) return std::nullopt;  // inside the hysteresis: as it was
  if (!below_) {
    below_ = true;
    last_ = now;
    return HostFloorCrossing{available, floor_, true};
  }
  if (now - last_ >= repeat_) {
    last_ = now;
    return HostFloorCrossing{available, floor_, false};
  }
  return std::nullopt;
}

}  // namespace spark::guard
