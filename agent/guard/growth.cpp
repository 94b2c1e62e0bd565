#include "guard/growth.h"

#include <algorithm>

namespace spark::guard {

void GrowthWatch::reset_baseline(uint64_t baseline, uint64_t limit) {
  baseline_ = baseline;
  limit_ = limit;
  samples_.clear();
  rate_ = 0;
  last_reason_.clear();
  last_warn_.reset();
}

namespace {

int severity(const std::string& r) {
  if (r == "budget_80pct") return 1;
  if (r == "eta" || r == "host_eta") return 2;
  return 0;
}

}  // namespace

std::optional<GrowthWarning> GrowthWatch::add(const GrowthSample& s) {
  samples_.push_back(s);
  while (samples_.size() > 2 && s.time - samples_.front().time > cfg_.rate_window) samples_.pop_front();

  // Least-squares slope of anon over time; needs samples that span at least a quarter of the window.
  rate_ = 0;
  if (samples_.size() >= 3 && samples_.back().time - samples_.front().time >= cfg_.rate_window / 4) {
    double n = static_cast<double>(samples_.size()), sx = 0, sy = 0, sxx = 0, sxy = 0;
    auto t0 = samples_.front().time;
    double y0 = static_cast<double>(samples_.front().anon);
    for (const auto& p : samples_) {
      double x = std::chrono::duration<double>(p.time - t0).count();
      double y = static_cast<double>(p.anon) - y0;
      sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    double den = n * sxx - sx * sx;
    if (den > 0) rate_ = (n * sxy - sx * sy) / den;
  }

  GrowthWarning w;
  w.rate = rate_;
  w.anon = s.anon;
  w.used = s.anon > baseline_ ? s.anon - baseline_ : 0;
  w.budget = limit_ > baseline_ ? limit_ - baseline_ : 0;
  w.left = limit_ > s.anon ? limit_ - s.anon : 0;
  w.host_available = s.host_available;
  bool growing = rate_ >= cfg_.min_rate;
  if (growing && limit_) w.eta_s = static_cast<double>(w.left) / rate_;
  if (growing) w.host_eta_s = static_cast<double>(s.host_available) / rate_;

  double warn_eta = std::chrono::duration<double>(cfg_.warn_eta).count();
  std::string reason;
  if (w.eta_s >= 0 && w.eta_s < warn_eta)
    reason = "eta";
  else if (w.host_eta_s >= 0 && w.host_eta_s < warn_eta)
    reason = "host_eta";
  else if (w.budget && static_cast<double>(w.used) >= cfg_.warn_fraction * static_cast<double>(w.budget))
    reason = "budget_80pct";
  if (reason.empty()) {
    // The condition cleared (growth stopped or memory was freed): the next one is news again.
    if (!growing && (!w.budget || static_cast<double>(w.used) < cfg_.warn_fraction * static_cast<double>(w.budget)))
      last_reason_.clear();
    return std::nullopt;
  }
  bool news = last_reason_.empty() || severity(reason) > severity(last_reason_) ||
              (last_warn_ && s.time - *last_warn_ >= cfg_.repeat);
  if (!news) return std::nullopt;
  last_reason_ = reason;
  last_warn_ = s.time;
  w.reason = reason;
  return w;
}

}  // namespace spark::guard
