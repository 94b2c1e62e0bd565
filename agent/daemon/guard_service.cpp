#include "daemon/guard_service.h"

#include "core/log.h"

namespace spark::daemon {

void GuardService::record(const guard::Event& e) {
  json j = e.to_json();
  log_info("guard " + e.guard_id + ": " + e.type, {{"GUARD", e.guard_id}, {"EVENT", e.type}, {"EVENT_JSON", j.dump()}});
  events_.emplace_back(next_seq_++, std::move(j));
  while (events_.size() > k_kept) events_.pop_front();
}

Result<void> GuardService::on_start(ServiceContext& ctx) {
  sup_ =
      std::make_unique<guard::GuardSupervisor>(ctx.paths(), ctx.tuner(), [this](const guard::Event& e) { record(e); });
  if (auto n = sup_->resume(); !n)
    log_error("guard: resuming journaled guards failed: " + describe(n.error()));
  else if (*n)
    log_info("guard: resumed " + std::to_string(*n) + " guard(s) from the journal");

  SPARK_TRY_VOID(ctx.add_handler("guard.add", [this](const json& params, const Peer&) -> Result<json> {
    SPARK_TRY(guard::GuardOptions o, guard::options_from_json(params));
    SPARK_TRY(std::string id, sup_->add(o));
    return json{{"id", id}, {"guard", sup_->state(id)->to_json()}, {"cursor", next_seq_ - 1}};
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
  // Events after a cursor, optionally of one guard / one type: {"since": N, "guard": "g1", "type": "server_ready"}.
  SPARK_TRY_VOID(ctx.add_handler("guard.events", [this](const json& params, const Peer&) -> Result<json> {
    uint64_t since = params.value("since", uint64_t{0});
    std::string gid = params.value("guard", ""), type = params.value("type", "");
    json out = json::array();
    for (const auto& [seq, e] : events_) {
      if (seq <= since) continue;
      if (!gid.empty() && e.value("guard", "") != gid) continue;
      if (!type.empty() && e.value("type", "") != type) continue;
      out.push_back(e);
    }
    return json{{"events", out}, {"cursor", next_seq_ - 1}};
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
