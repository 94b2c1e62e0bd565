// What ending something (a window, a guard) needs when it fails or runs short (issue 13): a
// reserve held from the start, so an end never depends on a free descriptor or on memory it has
// to allocate, and a backoff for the retries of a failed end (100 ms doubling to 60 s), so a
// failure is retried and logged, never in a tight loop and never given up.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace spark {

// Descriptors (the journal, the sysctl and sysfs files a release writes) and a little heap, taken
// at construction, given back just before an end and taken again after it.
class EndReserve {
 public:
  static constexpr size_t k_fds = 16;
  static constexpr size_t k_blocks = 8;  // of 32 KiB: below malloc's mmap threshold, so freed into the heap
  EndReserve() { take(); }
  ~EndReserve() { give_back(); }
  EndReserve(const EndReserve&) = delete;
  EndReserve& operator=(const EndReserve&) = delete;
  void take();
  void give_back();
  size_t fds_held() const { return fds_.size(); }

  // Gives the reserve back for the scope of an end and takes it again after.
  class Spend {
   public:
    explicit Spend(EndReserve& r) : r_(r) { r_.give_back(); }
    ~Spend() { r_.take(); }
    Spend(const Spend&) = delete;
    Spend& operator=(const Spend&) = delete;

   private:
    EndReserve& r_;
  };

 private:
  std::vector<int> fds_;
  std::vector<void*> blocks_;
};

inline constexpr std::chrono::milliseconds k_end_retry_first{100};
inline constexpr std::chrono::milliseconds k_end_retry_max{60'000};

// The retry state of one thing whose end failed.
struct EndRetry {
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> at;  // when to try again; nullopt: no end failed
  std::chrono::milliseconds backoff{k_end_retry_first};
  std::string reason;  // why it was ended (kept for the retry's log and event)
  int failures = 0;

  bool pending() const { return at.has_value(); }
  bool due(Clock::time_point now) const { return at && now >= *at; }
  // Records a failure at `now`: the first waits k_end_retry_first, each next twice the last (at
  // most k_end_retry_max). Returns the wait.
  std::chrono::milliseconds failed(Clock::time_point now);
};

}  // namespace spark
