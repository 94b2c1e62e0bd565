// The agent's server memory guards: requests guard.add / guard.end / guard.list / guard.events over
// a GuardSupervisor (guard/supervisor.h). On start it resumes every guard in the journal (after a
// kill -9 too). On stop it ends nothing: a guard is the kernel's limit on a running server, and it
// stays enforced while the agent restarts; `guard end` or `spark-tune revert` ends it.
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
  std::vector<int> poll_fds() override;
  void on_ready(int fd, Clock::time_point now) override;
  std::optional<Clock::time_point> next_timer() override;
  void on_timer(Clock::time_point now) override;

  // Events kept for guard.events (a cursor per client): the newest k_kept.
  static constexpr size_t k_kept = 4096;

 private:
  void record(const guard::Event& e);
  std::unique_ptr<guard::GuardSupervisor> sup_;
  std::deque<std::pair<uint64_t, json>> events_;
  uint64_t next_seq_ = 1;
};

}  // namespace spark::daemon
