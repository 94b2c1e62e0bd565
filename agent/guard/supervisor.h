// GuardSupervisor: every guard of this process. A library object the agent's loop (or the
// foreground `spark-tune guard` verb, or a test) drives: poll poll_fds(), call on_fd() for the
// ready ones and tick() at next_wake(). Guards are journaled (owner "guard:<id>", config in the
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
#include "core/result.h"
#include "guard/budget.h"
#include "guard/cgroup.h"
#include "guard/event.h"
#include "guard/growth.h"
#include "guard/process.h"
#include "guard/systemd_scope.h"
#include "tune/tuner.h"

namespace spark::guard {

// Guards held at once by one supervisor (the agent's; docs/cli.md, "Limits"): one more is refused.
inline constexpr size_t k_max_guards = 64;

using Ms = std::chrono::milliseconds;

// The PSI trigger of a v2 box: "some" stall of 300 ms within 2 s.
inline constexpr std::chrono::microseconds k_box_psi_stall{300000}, k_box_psi_window{2000000};

struct GuardOptions {
  pid_t pid = 0;                     // guard a running process (moved into a box of its own)
  std::string cgroup;                // or guard an existing memory cgroup in place ("/path" in the hierarchy)
  std::vector<std::string> command;  // what --restart runs; default: the process's own command line
  std::string budget;                // "" = min(8 GiB, 30% of available); "2G"; "30% of available"
  std::optional<uint64_t> memory_high, memory_max;  // absolute values
  Ms settle_after{0};                               // footprint measured this long after the start (the load is done)
  bool force = false;                               // allow a limit below current usage
  std::vector<std::string> on_oom;
  Ms hook_timeout{10000};
  bool restart = false;
  int restart_max = 5;
  Ms restart_window{300000};
  Ms restart_backoff{250};       // first restart immediate, then backoff * 2^(n-1), at most 30 s
  std::string until_port;        // HOST:PORT readiness after a restart
  Ms warn_eta{30000};            // memory_growth when the limit is nearer than this
  std::string parent;            // cgroup the box is made under; default this process's own memory cgroup
  bool settle_on_ready = false;  // footprint measured when --until-port first accepts (the load is done)
  std::string host_floor;        // --host-floor as given (guard/host_floor.h): "" default, "off", SIZE|N%
};

nlohmann::json options_to_json(const GuardOptions& o);
Result<GuardOptions> options_from_json(const nlohmann::json& j);

struct SupervisorConfig {
  Ms sample_interval{100};
  Ms journal_check{1000};  // notice a guard ended by another spark-tune process
  Ms probe_interval{2};    // readiness probes while a restarted server starts
  Ms pressure_repeat{10000};
  // Asks systemd for a transient scope holding the given pids (returns the job). Empty: the
  // system bus (start_transient_scope); tests give a fake.
  std::function<Result<std::string>(const ScopeRequest&)> start_scope;
};

// The journaled form of a guard: options plus what set-up found and restarts changed.
struct GuardState {
  std::string id;
  GuardOptions opt;
  pid_t pid = 0;
  std::string box;        // the cgroup path guarded
  bool owns_box = false;  // created by the guard (removed at the end)
  std::string origin;     // where the process was before (restored at the end)
  std::string scope;      // the systemd transient scope holding the box, where systemd runs
  ServerLaunch launch;    // for restarts
  bool settled = false;
  uint64_t footprint = 0;
  uint64_t budget = 0;
  uint64_t limit = 0;
  std::vector<int64_t> restarts_ms;  // unix ms of each restart
  int64_t started_ms = 0;
  uint64_t host_floor = 0;  // MemAvailable floor in bytes (guard/host_floor.h); 0: none

  nlohmann::json to_json() const;
  static Result<GuardState> from_json(const nlohmann::json& j);
};

std::string guard_owner(const std::string& id);  // "guard:<id>"
// The guards in the journal (read without the lock): id -> state.
Result<std::vector<GuardState>> list_guards(const HostPaths& paths);
// Ends a guard from any process: its processes go back where they came from, every value it set
// is restored and its cgroup removed.
Result<void> end_guard(const HostPaths& paths, Tuner& tuner, const std::string& id);

class GuardSupervisor {
 public:
  GuardSupervisor(HostPaths paths, Tuner& tuner, EventSink sink, SupervisorConfig cfg = {});
  ~GuardSupervisor();
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

  std::vector<pollfd> poll_fds() const;
  void on_fd(int fd, short revents);
  void tick();
  Ms next_wake() const;
  // One round of the loop: poll for at most `max_wait`, dispatch, tick.
  void run_once(Ms max_wait);

 private:
  struct Runtime;
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
  Tuner& tuner_;
  EventSink sink_;
  SupervisorConfig cfg_;
  std::optional<MemoryHierarchy> h_;
  std::map<std::string, std::unique_ptr<Runtime>> guards_;
  std::vector<RunningHook> hooks_;
  EndReserve reserve_;
  std::chrono::steady_clock::time_point next_journal_check_{};
  int last_id_ = 0;
};

}  // namespace spark::guard
