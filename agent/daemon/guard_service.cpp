#include "daemon/guard_service.h"

#include "core/log.h"

namespace spark::daemon {

Result<void> GuardService::on_start(ServiceContext& ctx) {
  // Guard events go to the agent's one event log (journal, events.list, guard wait, /metrics).
  EventLog* log = &ctx.events();
  sup_ = std::make_unique<guard::GuardSupervisor>(ctx.paths(), ctx.tuner(),
                                                  [log](const guard::Event& e) { log->append(e); });
  // While guards run, an OOM kill the probes see waits briefly for the guard's own: one event.
  log->set_guards_active([this] { return sup_ && !sup_->ids().empty(); });
  if (auto n = sup_->resume(); !n)
    log_error("guard: resuming journaled guards failed: " + describe(n.error()));
  else if (*n)
    log_info("guard: resumed " + std::to_string(*n) + " guard(s) from the journal");

  SPARK_TRY_VOID(ctx.add_handler("guard.add", [this, log](const json& params, const Peer&) -> Result<json> {
    SPARK_TRY(guard::GuardOptions o, guard::options_from_json(params));
    SPARK_TRY(std::string id, sup_->add(o));
    return json{{"id", id}, {"guard", sup_->state(id)->to_json()}, {"cursor", log->last_seq()}};
  }));
  SPARK_TRY_VOID(ctx.add_handler("guard.end", [this](const json& params, const Peer&) -> Result<json> {
    std::string id = params.value("id", "");
    if (id.empty()) return input_error("guard.end needs an id");
    if (sup_->state(id)) {
      SPARK_TRY_VOID(sup_->end(id, "ended on request"));
    } else {
      return input_error("no guard '" + id + "' (see spark-tune guard list)");
    }
    return json{{"id", id}, {"ended", true}};
  }));
  SPARK_TRY_VOID(ctx.add_handler("guard.list", [this](const json&, const Peer&) -> Result<json> {
    json out = json::array();
    for (const auto& id : sup_->ids()) out.push_back(sup_->state(id)->to_json());
    return out;
  }));
  return {};
}

std::vector<int> GuardService::poll_fds() {
  std::vector<int> out;
  for (const auto& p : sup_->poll_fds()) out.push_back(p.fd);
  return out;
}

void GuardService::on_ready(int fd, Clock::time_point) {
  sup_->on_fd(fd, 0);
}

std::optional<Clock::time_point> GuardService::next_timer() {
  return Clock::now() + sup_->next_wake();
}

void GuardService::on_timer(Clock::time_point) {
  sup_->tick();
}

}  // namespace spark::daemon
