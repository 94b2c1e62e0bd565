#include "daemon/guard_service.h"

#include "core/log.h"

namespace spark::daemon {

Result<void> GuardService::on_start(ServiceContext& ctx) {
  // Guard events go to the agent's one event log (journal, events.list, guard wait, /metrics).
  EventLog* log = &ctx.events();
  sup_ = std::make_unique<guard::GuardSupervisor>(ctx.paths(), ctx.tuner(), [log](const Event& e) { log->append(e); });
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

// The supervisor is a LoopPart itself: its fds keep their events (a v2 box's PSI trigger and
// memory.events are POLLPRI: both are always POLLIN-ready).
std::vector<pollfd> GuardService::poll_fds() { return sup_->poll_fds(); }

void GuardService::on_ready(int fd, Clock::time_point now) { sup_->on_ready(fd, now); }

std::optional<Clock::time_point> GuardService::next_timer() { return sup_->next_timer(); }

void GuardService::on_timer(Clock::time_point now) { sup_->on_timer(now); }

}  // namespace spark::daemon
