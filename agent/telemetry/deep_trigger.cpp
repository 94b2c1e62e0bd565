#include "telemetry/deep_trigger.h"

#include <cmath>

namespace spark::telemetry {

bool DeepTrigger::should_start(const std::string& kind, Clock::time_point now) const {
  if (p_.period.count() <= 0 || until_) return false;
  if (!p_.kinds.count(kind)) return false;
  return !cool_until_ || now >= *cool_until_;
}

void DeepTrigger::started(Clock::time_point now) { started_for(now, p_.period); }

void DeepTrigger::failed(Clock::time_point now) {
  until_.reset();
  cool_until_ = now + p_.cooldown;
}

void DeepTrigger::finished(Clock::time_point now) {
  until_.reset();
  cool_until_ = now + p_.cooldown;
}

std::optional<std::chrono::milliseconds> parse_policy_seconds(const std::string& value, std::string* error) {
  try {
    size_t used = 0;
    double s = std::stod(value, &used);
    if (used != value.size() || !std::isfinite(s) || s < 0 || s > 24 * 3600) throw std::invalid_argument(value);
    return std::chrono::milliseconds(std::llround(s * 1000));
  } catch (...) {
    if (error) *error = "'" + value + "' is not a number of seconds between 0 and 86400";
    return std::nullopt;
  }
}

}  // namespace spark::telemetry
