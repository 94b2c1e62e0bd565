#include "daemon/window_service.h"

#include "core/log.h"

namespace spark::daemon {

Result<void> WindowService::on_start(ServiceContext& ctx) {
  mgr_ = std::make_unique<WindowManager>(ctx.paths(), ctx.tuner());
  EventLog* log = &ctx.events();
  mgr_->set_event_sink([log](const Event& e) { log->append(e); });
  SPARK_TRY(auto ended, mgr_->recover());
  if (!ended.empty()) log_info("recovery ended " + std::to_string(ended.size()) + " window(s)");

  SPARK_TRY_VOID(ctx.add_handler("window.begin", [this](const json& params, const Peer& peer) -> Result<json> {
    SPARK_TRY(WindowSpec spec, spec_from_json(params));
    SPARK_TRY(WindowRecord r, mgr_->begin(spec));
    log_info("window " + r.id + " begun for uid " + std::to_string(peer.uid) + " pid " + std::to_string(peer.pid),
             {{"WINDOW", r.id}, {"PEER_UID", std::to_string(peer.uid)}});
    return mgr_->describe_window(r.id);
  }));
  SPARK_TRY_VOID(ctx.add_handler("window.end", [this](const json& params, const Peer& peer) -> Result<json> {
    std::string who = "ended by uid " + std::to_string(peer.uid);
    if (params.value("all", false)) {
      SPARK_TRY(auto ids, mgr_->end_all(who));
      return json{{"ended", ids}};
    }
    if (!params.contains("id") || !params["id"].is_string()) return input_error("window.end needs an id or all");
    std::string id = params["id"];
    SPARK_TRY_VOID(mgr_->end(id, who));
    return json{{"ended", {id}}};
  }));
  SPARK_TRY_VOID(ctx.add_handler("window.list", [this](const json&, const Peer&) -> Result<json> {
    return mgr_->describe_windows();
  }));
  return {};
}

std::vector<pollfd> WindowService::poll_fds() {
  std::vector<pollfd> out;
  if (mgr_)
    for (int fd : mgr_->poll_fds()) out.push_back({fd, POLLIN | POLLPRI, 0});
  return out;
}
void WindowService::on_ready(int fd, Clock::time_point now) { mgr_->on_ready(fd, now); }
std::optional<Clock::time_point> WindowService::next_timer() { return mgr_ ? mgr_->next_timer() : std::nullopt; }
void WindowService::on_timer(Clock::time_point now) { mgr_->on_timer(now); }

void WindowService::on_stop() {
  if (!mgr_) return;
  if (auto r = mgr_->end_all("agent stopped"); !r) log_error("ending windows at stop: " + describe(r.error()));
}

void WindowService::on_handover() {
  if (!mgr_) return;
  log_info("handing " + std::to_string(mgr_->list().size()) + " window(s) over: they stay journaled");
  mgr_.reset();
}

}  // namespace spark::daemon
