// The agent's load windows: requests window.begin / window.end / window.list over the
// WindowManager (window/window.h). On start it recovers windows from the journal; on stop (SIGTERM)
// it ends every window so a stopped agent leaves the host as it found it. A crashed agent (kill -9)
// ends nothing: the next start resumes live windows and ends the expired ones.
#pragma once

#include <memory>

#include "daemon/service.h"
#include "window/window.h"

namespace spark::daemon {

class WindowService : public Service {
 public:
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
  std::unique_ptr<WindowManager> mgr_;
};

}  // namespace spark::daemon
