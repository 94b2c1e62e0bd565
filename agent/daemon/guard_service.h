// The agent's server memory guards: requests guard.add / guard.end / guard.list over
// a GuardSupervisor (guard/supervisor.h). On start it resumes every guard in the journal (after a
// kill -9 too). Its events go to the agent's event log (guard.events and events.list read it). On
// stop it ends nothing: a guard is the kernel's limit on a running server, and it stays enforced
// while the agent restarts; `guard end` or `spark-tune revert` ends it.
#pragma once

#include <deque>
#include <memory>

#include "daemon/service.h"
#include "guard/supervisor.h"

namespace spark::daemon {

class GuardService : public Service {
 public:
  std::string name() const override { return "guard"; }
  Result<void> on_start(ServiceContext& ctx) override;
  std::vector<pollfd> poll_fds() override;
  void on_ready(int fd, Clock::time_point now) override;
  std::optional<Clock::time_point> next_timer() override;
  void on_timer(Clock::time_point now) override;

 private:
  std::unique_ptr<guard::GuardSupervisor> sup_;
};

}  // namespace spark::daemon
