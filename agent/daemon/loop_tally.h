// What the agent's loop did in each round, for finding what stood in front of a slow answer
// (issue 13, the soak: a ping whose answer costs nothing took > 50 ms). Off unless the agent's
// environment names a file in SPARK_TUNE_LOOP_TALLY (bench/agent_soak --loop-tally sets it); off,
// each item costs the agent one pointer test.
//
// One line per round that did something (a poll that returned ready fds or a timer that ran):
//
//   <poll_ns> <start_ns> <end_ns> <cpu_ns> <poll_delay_ns> <round_delay_ns> [<label>:<us> ...]
//
// poll_ns: when the loop entered poll; start_ns: when poll returned; end_ns: when the round's
// work was done (steady_clock ns, the same clock as the bench's). cpu_ns: the loop thread's CPU
// time in the round. poll_delay_ns / round_delay_ns: the time the thread was runnable but waited
// for a CPU (schedstat's run_delay) between poll's wake-up and its return, and during the round.
// Each item is one request (its method), "accept", "send" (queued replies flushed), a service's
// fd ("window.ready") or its timer ("window.timer"), with its wall time in microseconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/fd.h"
#include "core/host_paths.h"

namespace spark::daemon {

class LoopTally {
 public:
  using Clock = std::chrono::steady_clock;
  // From SPARK_TUNE_LOOP_TALLY; nullptr when it is unset or the file cannot be opened (said once).
  static std::unique_ptr<LoopTally> from_env(const HostPaths& paths);
  // Writes to `out` (owned: closed with the tally); the run delay from `schedstat` (the loop
  // thread's, opened once; -1: not measured, written as 0).
  LoopTally(std::FILE* out, int schedstat_fd);
  ~LoopTally();
  LoopTally(const LoopTally&) = delete;
  LoopTally& operator=(const LoopTally&) = delete;

  void before_poll();
  void after_poll();
  // An item of this round: from `start` to now.
  void add(std::string_view label, Clock::time_point start);
  // Writes the round's line when it did something.
  void round_end();

 private:
  struct Item {
    std::string label;
    int64_t us;
  };
  uint64_t run_delay_ns() const;
  static int64_t cpu_ns();
  std::FILE* out_;
  Fd schedstat_fd_;
  Clock::time_point poll_at_{}, start_{};
  uint64_t delay_poll_ = 0, delay_start_ = 0;
  int64_t cpu_start_ = 0;
  std::vector<Item> items_;
};

// Times one item when a tally is on; nothing otherwise (the label is not even copied).
class TallySpan {
 public:
  TallySpan(LoopTally* t, std::string_view label) : t_(t) {
    if (t_) {
      label_ = label;
      start_ = LoopTally::Clock::now();
    }
  }
  ~TallySpan() {
    if (t_) t_->add(label_, start_);
  }
  TallySpan(const TallySpan&) = delete;
  TallySpan& operator=(const TallySpan&) = delete;
  void relabel(std::string_view label) {
    if (t_) label_ = label;
  }

 private:
  LoopTally* t_;
  std::string label_;
  LoopTally::Clock::time_point start_{};
};

}  // namespace spark::daemon
