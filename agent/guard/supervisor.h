// GuardSupervisor: every guard of this process. A LoopPart (core/loop.h) that the agent's loop
// (or the foreground `spark-tune guard` verb, or a test) drives: poll poll_fds(), call on_ready()
// for the ready ones and on_timer() (tick()) at next_timer(). Guards are journaled (owner "guard:<id>", config in the
// owner state), so resume() after a restart (kill -9 included) picks every one of them up again.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/end_retry.h"
#include "core/host_paths.h"
#include "core/loop.h"
#include "core/result.h"
#include "guard/budget.h"
#include "guard/cgroup.h"
#include "guard/event.h"
#include "guard/growth.h"
#include "guard/guard_state.h"
#include "guard/process.h"
#include "guard/systemd_scope.h"
#include "tune/tuner.h"

namespace spark::guard {

struct GuardRuntime;  // guard/guard_runtime.h

// Guards held at once by one supervisor (the agent's; docs/cli.md, "Limits"): one more is refused.
inline constexpr size_t k_max_guards = 64;

// The PSI trigger of a v2 box: "some" stall of 300 ms within 2 s.
inline constexpr std::chrono::microseconds k_box_psi_stall{300000}, k_box_psi_window{2000000};

struct SupervisorConfig {
  Ms sample_interval{100};
  Ms journal_check{1000};  // notice a guard ended by another spark-tune process
  Ms probe_interval{2};    // readiness probes while a restarted server starts
  Ms pressure_repeat{10000};
  // Asks systemd for a transient scope holding the given pids (returns the job). Empty: the
  // system bus (start_transient_scope); tests give a fake.
  std::function<Result<std::string>(const ScopeRequest&)> start_scope;
};

class GuardSupervisor : public LoopPart {
 public:
  GuardSupervisor(HostPaths paths, tune::Tuner& tuner, EventSink sink, SupervisorConfig cfg = {});
  ~GuardSupervisor() override;
  GuardSupervisor(const GuardSupervisor&) = delete;
  GuardSupervisor& operator=(const GuardSupervisor&) = delete;

  // Validates everything first; on any error nothing is changed. Returns the guard id.
  Result<std::string> add(const GuardOptions& o);
  // Ends the guard with the end reserve (core/end_retry.h). A failed end keeps the guard, stops
  // watching it and retries with the backoff (100 ms doubling to 60 s) from tick(), each failure
  // logged, until it ends: never a tight loop, never lost. The error is returned all the same.
  Result<void> end(const std::string& id, const std::string& reason = "ended");
  // Whether the guard's end failed and waits for its retry.
  bool ending(const std::string& id) const;
  // Takes over every guard in the journal (after an agent restart). Returns how many.
  Result<size_t> resume();

  std::vector<std::string> ids() const;
  const GuardState* state(const std::string& id) const;
  // Guards or hooks still running.
  bool active() const;

  // The loop contract (core/loop.h): each fd with its events (a v2 box's PSI trigger and
  // memory.events: POLLPRI), the next time anything is due (samples, settles, restarts, probes,
  // hook timeouts, end retries, the journal check).
  std::vector<pollfd> poll_fds() override;
  void on_ready(int fd, LoopClock::time_point now) override;
  std::optional<LoopClock::time_point> next_timer() override;
  void on_timer(LoopClock::time_point /*now*/) override { tick(); }
  // Everything due now (what on_timer runs; safe to call at any time).
  void tick();
  // One round of the loop over this supervisor alone (run_loop_once): poll for at most `max_wait`,
  // dispatch, then tick when something is due.
  void run_once(Ms max_wait);

 private:
  using Runtime = GuardRuntime;  // guard/guard_runtime.h
  struct RunningHook {
    std::string guard_id;
    SpawnedHook hook;
    Fd pidfd;
    std::chrono::steady_clock::time_point deadline;
    bool killed = false;
  };
  Result<void> setup_watch(Runtime& g);
  Result<void> settle(Runtime& g);
  void settle_now(Runtime& g);
  void sample(Runtime& g, std::chrono::steady_clock::time_point now);
  void check_oom(Runtime& g);
  void check_host_floor(Runtime& g, std::chrono::steady_clock::time_point now);
  void handle_exit(Runtime& g, std::optional<int> status);
  void start_server(Runtime& g);
  Result<std::string> scope_with(pid_t pid, const std::string& name, const std::string& description);
  Result<void> join_new_scope(Runtime& g, pid_t pid);
  void run_hook(const Event& e);
  void emit(const std::string& id, const std::string& type, nlohmann::json fields);
  void persist(Runtime& g);
  void drop(const std::string& id);
  void retry_end(const std::string& id);
  Result<MemoryHierarchy> hierarchy();
  nlohmann::json growers(Runtime& g);

  HostPaths paths_;
  tune::Tuner& tuner_;
  EventSink sink_;
  SupervisorConfig cfg_;
  std::optional<MemoryHierarchy> h_;
  std::map<std::string, std::unique_ptr<Runtime>> guards_;
  std::vector<RunningHook> hooks_;
  EndReserve reserve_;
  std::chrono::steady_clock::time_point next_journal_check_{};
  std::chrono::steady_clock::time_point last_tick_{};
  int last_id_ = 0;
};

}  // namespace spark::guard
