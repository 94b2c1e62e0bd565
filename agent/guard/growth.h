// Growth watch: follows a box's anonymous memory, estimates its growth rate (least squares over a
// sliding window) and decides when to warn: at a fraction of the budget used, and whenever the
// estimated time to the limit or to host exhaustion drops under a threshold. Pure logic: the
// supervisor feeds it samples, tests feed it synthetic ones.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace spark::guard {

using SteadyTime = std::chrono::steady_clock::time_point;

struct GrowthConfig {
  double warn_fraction = 0.8;                   // of the budget
  std::chrono::milliseconds warn_eta{30000};    // warn when the limit is nearer than this
  std::chrono::milliseconds rate_window{3000};  // samples the rate is fitted over
  double min_rate = 1024.0 * 1024.0;            // bytes/s below which growth is noise
  std::chrono::milliseconds repeat{10000};      // a persisting condition is re-announced this often
};

struct GrowthSample {
  SteadyTime time;
  uint64_t anon = 0;            // the box's anonymous memory
  uint64_t host_available = 0;  // MemAvailable
};

struct GrowthWarning {
  std::string reason;  // "budget_80pct", "eta", "host_eta"
  double rate = 0;     // bytes/s
  uint64_t anon = 0;
  uint64_t used = 0;  // growth over the baseline
  uint64_t budget = 0;
  uint64_t left = 0;  // bytes before the limit
  double eta_s = -1;  // seconds to the limit at this rate (-1: not growing)
  double host_eta_s = -1;
  uint64_t host_available = 0;
};

class GrowthWatch {
 public:
  // baseline: anon when the load was done; limit: where the kernel kills (0 = none, host only).
  GrowthWatch(GrowthConfig cfg, uint64_t baseline, uint64_t limit) : cfg_(cfg), baseline_(baseline), limit_(limit) {}
  std::optional<GrowthWarning> add(const GrowthSample& s);
  double rate() const { return rate_; }
  void reset_baseline(uint64_t baseline, uint64_t limit);

 private:
  GrowthConfig cfg_;
  uint64_t baseline_;
  uint64_t limit_;
  std::deque<GrowthSample> samples_;
  double rate_ = 0;
  std::string last_reason_;
  std::optional<SteadyTime> last_warn_;
};

}  // namespace spark::guard
