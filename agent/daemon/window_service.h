// The agent's load windows: requests window.begin / window.end / window.list over the
// WindowManager (window/window.h). On start it recovers windows from the journal; on stop (SIGTERM)
// it ends every window so a stopped agent leaves the host as it found it. A crashed agent (kill -9)
// ends nothing: the next start resumes live windows and ends the expired ones.
#pragma once

#include <condition_variable>
#include <deque>
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

 private:
  // A window.begin whose --files name directories or globs: expanded on the worker thread, begun
  // on the loop when the worker hands the list back (wake_fd_), answered then (a deferred reply).
  // A tree of 30 000 files held the loop 0.3-3 s when it was expanded there (issue 13, the soak).
  // Then, for a window past k_keeper_inline_files files or over a directory, its cache keeper is
  // built on the worker too (the keeper stats every file: 178-341 ms of the loop for 30 000 files)
  // and attached on the loop; the begin is answered then.
  struct Expansion {
    window::WindowSpec spec;
    Peer peer;
    DeferredReply to;
    std::optional<Result<std::vector<fs::path>>> files;
    std::optional<window::KeeperRecipe> keeper_recipe;  // the second stage: the window is begun
    std::unique_ptr<tune::CacheKeeper> keeper;
  };
  // Begins the window; with a DeferredReply whose keeper is built off the loop (`later`), the
  // reply waits for it (nullopt returned: nothing to answer yet).
  std::optional<Result<json>> begin_now(const window::WindowSpec& spec, const Peer& peer,
                                        const std::vector<fs::path>* files, const DeferredReply* later = nullptr);
  void keeper_built(Expansion& job);
  void expand_off_loop(Expansion job);
  void worker_main();
  void stop_worker();

  ServiceContext* ctx_ = nullptr;
  std::unique_ptr<window::WindowManager> mgr_;
  // window.list's answer, serialised once and its bytes shared by the requests of the next
  // k_list_reuse (20 clients polling back to back in the soak each had it built anew, then each
  // had a copy of it serialised: issue 13). A begin or end through this service drops it; a
  // window ended by its TTL shows at most k_list_reuse late.
  SharedJson list_;
  Clock::time_point list_at_{};
  int wake_fd_ = -1;    // eventfd: the worker has finished an expansion
  std::thread worker_;  // started at the first expansion (after the agent dropped its capabilities)
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Expansion> todo_, done_;
  bool quit_ = false;
};

}  // namespace spark::daemon
