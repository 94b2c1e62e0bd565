// The agent's load windows: requests window.begin / window.end / window.list over the
// WindowManager (window/window.h). On start it recovers windows from the journal; on stop (SIGTERM)
// it ends every window so a stopped agent leaves the host as it found it. A crashed agent (kill -9)
// ends nothing: the next start resumes live windows and ends the expired ones.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "daemon/service.h"
#include "window/window.h"

namespace spark::daemon {

class WindowService : public Service {
 public:
  ~WindowService() override;
  std::string name() const override { return "window"; }
  Result<void> on_start(ServiceContext& ctx) override;
  std::vector<pollfd> poll_fds() override;
  void on_ready(int fd, Clock::time_point now) override;
  std::optional<Clock::time_point> next_timer() override;
  void on_timer(Clock::time_point now) override;
  void on_stop() override;
  // Windows stay journaled: the agent taking over resumes them (their TTL and watched pid too).
  void on_handover() override;
  // Tests: called on the thread that made a window's last eviction, once its files are evicted.
  void set_evicted_hook(std::function<void(const std::string& id)> hook) { evicted_hook_ = std::move(hook); }

 private:
  // A window.begin whose --files name directories or globs: expanded on the worker thread, begun
  // on the loop when the worker hands the list back (wake_fd_), answered then (a deferred reply).
  // A tree of 30 000 files held the loop 0.3-3 s when it was expanded there (issue 13, the soak).
  // Then, for a window past k_keeper_inline_files files or over a directory, its cache keeper is
  // built on the worker too (the keeper stats every file: 178-341 ms of the loop for 30 000 files)
  // and attached on the loop; the begin is answered then.
  //
  // The worker also takes a big window's last eviction off the loop as it ends (140-164 ms of the
  // loop for 30 000 files): the settings are restored on the loop at once, the files evicted on the
  // worker, and a window.end is answered once the windows it ended are evicted (an end by TTL or
  // process exit answers nobody). And a big window resumed after an agent restart: its list and
  // keeper on the worker (nobody to answer), started once the loop runs (after the capabilities
  // are dropped: a thread started before keeps them).
  struct Expansion {
    window::WindowSpec spec;
    Peer peer;
    std::optional<DeferredReply> to;  // none: nobody waits (a resumed window, a TTL end)
    std::optional<Result<std::vector<fs::path>>> files;
    std::optional<window::KeeperRecipe> keeper_recipe;  // the second stage: the window is begun
    std::unique_ptr<tune::CacheKeeper> keeper;
    bool evicts = false;                      // a job of last evictions:
    std::vector<window::WindowRecord> evict;  // the ended windows (emptied once evicted)
    json answer;                              // the window.end's answer once they are evicted
  };
  // Begins the window; with a DeferredReply whose keeper is built off the loop (`later`), the
  // reply waits for it (nullopt returned: nothing to answer yet).
  std::optional<Result<json>> begin_now(const window::WindowSpec& spec, const Peer& peer,
                                        const std::vector<fs::path>* files, const DeferredReply* later = nullptr);
  void keeper_built(Expansion& job);
  void expand_off_loop(Expansion job);
  // The last evictions the manager left (WindowManager::take_evictions) queued for the worker;
  // `to` is answered with `answer` once they are made.
  void evict_off_loop(std::vector<window::WindowRecord> evict, std::optional<DeferredReply> to = std::nullopt,
                      json answer = json());
  void worker_main();
  void evict_job(Expansion& job);
  void stop_worker();

  ServiceContext* ctx_ = nullptr;
  std::unique_ptr<window::WindowManager> mgr_;
  // window.list's answer, serialised once and its bytes shared by the requests of the next
  // k_list_reuse (20 clients polling back to back in the soak each had it built anew, then each
  // had a copy of it serialised: issue 13). A begin or end through this service drops it; a
  // window ended by its TTL shows at most k_list_reuse late.
  SharedJson list_;
  Clock::time_point list_at_{};
  int wake_fd_ = -1;        // eventfd: the worker has finished an expansion
  std::thread worker_;      // started at the first job once the loop runs (after the agent dropped its capabilities)
  bool loop_runs_ = false;  // next_timer was called: the agent's loop runs
  std::function<void(const std::string& id)> evicted_hook_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Expansion> todo_, done_;
  bool quit_ = false;
};

}  // namespace spark::daemon
