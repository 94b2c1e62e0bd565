// The floor of a load window (issue 14 part 2): act before the NVIDIA driver (NV_ERR_NO_MEMORY) or the
// kernel (OOM kill, or a host wedged without a message) does, while a model loads.
//
// Two floors, each optional: free pages (MemFree: what the driver allocates from) and MemAvailable
// (what is left at all). While a window with a floor is open its meminfo is read every `period`
// (10 ms); below a floor the ladder climbs, one step per event, each step only if the one before did
// not bring memory back above the floors within its grace (cut short when memory falls below half a
// floor: the step evidently did not hold it):
//   1 evict: the window's own files out of the page cache now (fadvise DONTNEED, and MADV_PAGEOUT of
//     the watched process tree's mappings of them), whatever the window's cache mode;
//   2 drop_caches: clean page cache host-wide (vm.drop_caches = 1; it costs every other process its
//     cache, and says so);
//   3 compact: vm.compact_memory = 1;
//   4 pause: the window's process tree (cgroup.freeze of its own cgroup v2 where it has one, through the
//     Tuner so a crashed agent's journal thaws it; SIGSTOP otherwise) until memory is back above the
//     floors + hysteresis, for at most `max_pause`;
//   5 stop: `--on-floor CMD` (fork/exec of its argv, never a shell), else SIGTERM and SIGKILL after
//     `kill_grace`.
// Back above the floors, the ladder re-arms: a later crossing starts again at step 1. At the window's
// end a paused tree is resumed (never left paused) and what the floor did is in window_end's data.
//
// FloorLadder is the policy alone (readings and a clock in, decisions out: unit-tested without a
// kernel); FloorKeeper carries it out on the host and reports every step as an event.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/event.h"
#include "core/host_paths.h"
#include "core/meminfo.h"
#include "core/result.h"
#include "telemetry/psi.h"
#include "tune/tuner.h"
#include "window/floor_wake.h"

namespace spark::window {

inline constexpr std::chrono::milliseconds k_floor_period{10};
// Near the floor and falling, the check comes sooner: at half the time the last two readings say
// the floor is away, never sooner than this.
inline constexpr std::chrono::microseconds k_floor_fast_period{1000};
inline constexpr std::chrono::milliseconds k_floor_grace{200};
inline constexpr std::chrono::milliseconds k_floor_max_pause{30'000};
inline constexpr std::chrono::milliseconds k_floor_kill_grace{5'000};

// "8G", "8GiB", "5%" (of MemTotal). Negative, unparsable, 0% < x > 100%, or above MemTotal: an input
// error naming `what` (the flag) that says what the host has.
Result<uint64_t> parse_floor(const std::string& text, uint64_t mem_total, const std::string& what);

// The floor as asked (the window spec, the profile): texts resolved at begin against MemTotal.
struct FloorAsk {
  std::string free;                   // SIZE|N%; empty: none ("off" too)
  std::string available;              // SIZE|N%
  std::vector<std::string> on_floor;  // argv of step 5
  bool force = false;                 // begin even when a floor is already crossed
  bool empty() const { return free.empty() && available.empty() && on_floor.empty() && !force; }
};

struct FloorSpec {
  uint64_t free_bytes = 0;       // 0: no free floor
  uint64_t available_bytes = 0;  // 0: no available floor
  uint64_t hysteresis = 0;       // a paused tree resumes at floor + this (default: 1/4 of the larger floor)
  std::chrono::milliseconds period = k_floor_period;
  std::chrono::microseconds fast_period = k_floor_fast_period;  // >= period: no pacing
  std::chrono::milliseconds grace = k_floor_grace;
  std::chrono::milliseconds max_pause = k_floor_max_pause;
  std::chrono::milliseconds kill_grace = k_floor_kill_grace;
  std::vector<std::string> on_floor;
  bool enabled() const { return free_bytes || available_bytes; }
};
nlohmann::json floor_to_json(const FloorSpec& s);
Result<FloorSpec> floor_from_json(const nlohmann::json& j);

// The ask resolved against the host's MemTotal; a floor already crossed (reading) is refused unless
// ask.force. Errors are input errors (exit 2): nothing has been changed yet.
Result<FloorSpec> resolve_floor(const FloorAsk& ask, const MemInfo& mem);

struct FloorReading {
  uint64_t free = 0;
  uint64_t available = 0;
};

enum class FloorStep { evict = 1, drop_caches = 2, compact = 3, pause = 4, stop = 5 };
const char* floor_step_name(FloorStep s);

struct FloorDecision {
  bool crossed = false;          // just went below a floor: floor_crossed
  std::optional<FloorStep> act;  // take this step now: floor_action
  bool resume = false;           // resume the paused tree
  bool restored = false;         // back above the floors after a crossing: floor_restored
  bool kill = false;             // the stop's grace ran out: SIGKILL what is left
  bool exhausted = false;        // no step left to take (no process to pause): reported once
};

class FloorLadder {
 public:
  using Clock = std::chrono::steady_clock;
  // has_process: the window watches a process (steps 4 and 5 need one).
  FloorLadder(FloorSpec spec, bool has_process) : spec_(std::move(spec)), has_process_(has_process) {}
  FloorDecision observe(const FloorReading& r, Clock::time_point now);
  // Below a floor (extra: above it by less than this).
  bool below(const FloorReading& r, uint64_t extra = 0) const;
  // Below half of a floor: the grace of the step taken is cut short.
  bool deep(const FloorReading& r) const;
  bool paused() const { return state_ == State::paused; }
  bool stopping() const { return state_ == State::stopping || state_ == State::done; }
  std::optional<FloorStep> last_step() const { return step_; }
  const FloorSpec& spec() const { return spec_; }

 private:
  enum class State { idle, climbing, paused, stopping, done, exhausted };
  FloorSpec spec_;
  bool has_process_;
  State state_ = State::idle;
  std::optional<FloorStep> step_;
  Clock::time_point since_{};
};

// What a keeper did in its window, for window_end.
struct FloorStats {
  uint64_t crossings = 0;
  uint64_t actions[6] = {0, 0, 0, 0, 0, 0};  // by step
  uint64_t lowest_free = UINT64_MAX, lowest_available = UINT64_MAX;
  int64_t paused_ms = 0;
  bool stopped = false;
  std::vector<int64_t> first_action_us;  // per crossing: the crossing reading -> first step done
  std::vector<int64_t> first_begun_us;   // per crossing: the crossing reading -> first step begun
  // Per crossing, steady-clock times (benches pair them with their own view of the crossing).
  struct Times {
    std::chrono::steady_clock::time_point seen{}, begun{}, done{};
  };
  std::vector<Times> times;
  uint64_t checks = 0, wakes_timer = 0, wakes_psi = 0, wakes_reclaim = 0;
  std::string last_error;
  nlohmann::json to_json() const;
};

class FloorKeeper {
 public:
  using Clock = std::chrono::steady_clock;
  using MeminfoSource = std::function<Result<MemInfo>()>;
  // owner: "window:w3"; files: the window's files; pid: its watched process (0: none).
  FloorKeeper(HostPaths paths, tune::Tuner& tuner, std::string window_id, std::vector<fs::path> files, pid_t pid,
              FloorSpec spec, EventSink sink);
  ~FloorKeeper();
  FloorKeeper(const FloorKeeper&) = delete;
  FloorKeeper& operator=(const FloorKeeper&) = delete;

  // Tests inject the meminfo figures (default: read_meminfo of the paths). Before start_watch.
  void set_meminfo_source(MeminfoSource source) { meminfo_ = std::move(source); }
  // One check: read meminfo, ask the ladder, carry out its decision.
  void tick(Clock::time_point now);
  // Without a watch: when the owner's loop must call tick() next (the period, sooner when memory
  // falls towards the floor). With a watch: never (the watch thread checks).
  Clock::time_point next_check() const;
  // Without a watch: a memory PSI trigger (some 5 ms of stall in 500 ms, or 2 s unprivileged) that
  // wakes the owner's loop between checks, -1 where the kernel has no PSI; on_psi() checks at once.
  // With a watch: an eventfd readable when the watch thread has events for the owner's thread, and
  // on_psi() hands them to the sink (the event log is the owner thread's).
  int psi_fd() const;
  void on_psi(Clock::time_point now);

  // The watch (event-driven detection): a thread of the keeper's own blocks in epoll on a timerfd
  // (the period; sooner near the floor), the PSI trigger and `wake` (the reclaim tracepoints), and
  // checks and acts at once on any of them, not when the owner's loop comes round. The ladder's
  // state is behind one mutex; every kernel write goes through the Tuner/Actuator as before (the
  // journal first). Events wait for the owner's thread (psi_fd/on_psi). wake null: timer and PSI
  // only, and `no_wake` says why (logged once per process, and in watch_json()).
  Result<void> start_watch(std::unique_ptr<FloorWakeSource> wake, const std::string& no_wake = "");
  // The same with the real reclaim tracepoints (telemetry/reclaim_wake.h), or their fallback.
  Result<void> start_watch();
  // Which sources detect a crossing: {"thread", "period_ms", "fast_period_us", "psi",
  // "reclaim_tracepoints" or "reclaim_fallback"}.
  nlohmann::json watch_json() const;
  bool watching() const { return watch_.joinable(); }
  // (owner thread only: start_watch and stop_watch are.)

  // The window ends: stop the watch, resume a paused tree, reap a finished on-floor command; the stats as JSON.
  nlohmann::json finish();
  FloorStats stats() const;
  bool paused() const;

 private:
  void tick_locked(Clock::time_point now);
  void pace(const FloorReading& r, Clock::time_point now);
  void watch_loop();
  void stop_watch();
  void deliver();  // queued events to the sink (the owner's thread)
  nlohmann::json watch_json_locked() const;
  bool paused_locked() const { return !paused_pids_.empty() || !frozen_cgroup_.empty(); }
  Result<FloorReading> read();
  void report(FloorStep step, const std::string& name, const FloorReading& before, Clock::time_point started,
              Clock::time_point finished, const Result<std::string>& done);
  void reap_background(bool wait);
  void emit(const std::string& type, const std::string& summary, nlohmann::json data);
  Result<std::string> take(FloorStep step);
  Result<std::string> evict_files();
  Result<std::string> pause_tree();
  Result<std::string> resume_tree();
  void journal_stopped(const std::vector<pid_t>& pids);
  Result<std::string> stop_tree();
  void kill_tree();
  std::vector<pid_t> tree() const;
  std::string owner() const { return "window:" + id_; }

  HostPaths paths_;
  tune::Tuner& tuner_;
  std::string id_;
  std::vector<fs::path> files_;
  pid_t pid_;
  FloorLadder ladder_;
  EventSink sink_;
  MeminfoSource meminfo_;
  FloorStats stats_;
  Clock::time_point next_{};
  std::optional<Clock::time_point> crossed_at_;
  bool first_action_done_ = false;
  std::vector<pid_t> paused_pids_;  // SIGSTOPped
  std::string frozen_cgroup_;       // cgroup v2 target name frozen through the Tuner
  std::optional<Clock::time_point> paused_since_;
  pid_t on_floor_pid_ = 0;
  // Host-wide steps (drop_caches, compact) running on a thread of their own.
  struct Background {
    FloorStep step = FloorStep::drop_caches;
    FloorReading before;
    Clock::time_point started{}, finished{};
    Result<std::string> result = std::string();
    std::atomic<bool> done{false};
    std::thread thread;
  };
  std::vector<std::unique_ptr<Background>> background_;
  std::optional<telemetry::PsiTrigger> psi_;
  // Pacing: the last reading's margin above the nearest floor, and when.
  std::optional<std::pair<int64_t, Clock::time_point>> last_margin_;
  double fall_rate_ = 0;  // bytes per microsecond the margin shrinks, smoothed
  // The watch.
  mutable std::mutex mu_;
  std::thread watch_;
  int epoll_fd_ = -1, timer_fd_ = -1, stop_fd_ = -1, notify_fd_ = -1;
  std::unique_ptr<FloorWakeSource> wake_;
  std::string no_wake_;
  std::string realtime_;  // the watch thread's scheduling, or why not real-time
  bool watch_ran_ = false;
  bool watching_ = false;     // under mu_: events are queued, next_check() is the thread's
  std::deque<Event> queued_;  // events for the owner's thread
};

}  // namespace spark::window

namespace spark::window {

nlohmann::json floor_ask_to_json(const FloorAsk& a);
// Validates what can be without the host (a negative floor, a bad size) as it parses.
Result<FloorAsk> floor_ask_from_json(const nlohmann::json& j);

// The floor of a window about to begin: what was asked, else the window profile's
// (window.free_floor, window.available_floor), the latter only where window.floor says so:
// "on", or "unified" (the shipped default: on a unified-memory host only), "off". nullopt: no floor.
Result<std::optional<FloorSpec>> window_floor(const std::optional<FloorAsk>& asked,
                                              const std::map<std::string, std::string>& profile_options,
                                              const std::function<bool()>& unified_host, const MemInfo& mem);

}  // namespace spark::window
