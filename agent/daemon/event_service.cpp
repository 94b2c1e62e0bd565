#include "daemon/event_service.h"

#include <algorithm>

#include "core/log.h"

namespace spark::daemon {

namespace {
constexpr std::chrono::milliseconds k_max_wait{10'000};
constexpr size_t k_max_waiters = 64;

Result<std::optional<uint64_t>> cursor_param(const json& params, const char* key, const char* method) {
  if (!params.contains(key) || params[key].is_null()) return std::optional<uint64_t>{};
  if (!params[key].is_number_unsigned() && !params[key].is_number_integer())
    return input_error(std::string(method) + ": " + key + " is the cursor (\"next\") of an earlier answer");
  return std::optional<uint64_t>{params[key].get<uint64_t>()};
}

Result<std::string> string_param(const json& params, const char* key) {
  if (!params.contains(key) || params[key].is_null()) return std::string();
  if (!params[key].is_string()) return input_error(std::string("events.list: ") + key + " is a string");
  return params[key].get<std::string>();
}

}  // namespace

json event_page_json(const EventPage& page, size_t capacity) {
  json events = json::array();
  for (const auto& e : page.events) events.push_back(e.to_json());
  return json{{"events", std::move(events)}, {"next", page.next}, {"dropped", page.dropped}, {"capacity", capacity}};
}

Result<void> EventService::on_start(ServiceContext& ctx) {
  ctx_ = &ctx;
  ctx.events().on_append([this](const Event& e) {
    log(LogLevel::info, e.summary.empty() ? e.type : e.summary, event_log_fields(e));
    appended_ = true;
  });
  SPARK_TRY_VOID(ctx.add_handler(
      "events.list", [this](const json& p, const Peer&) -> Result<json> { return list(p, std::nullopt, false); }));
  SPARK_TRY_VOID(ctx.add_handler("telemetry.events", [this](const json& p, const Peer&) -> Result<json> {
    return list(p, EventSource::telemetry, false);
  }));
  // guard.events {"since", "guard", "type"} -> {"events", "cursor"} (spark-tune before issue 12).
  SPARK_TRY_VOID(ctx.add_handler("guard.events", [this](const json& p, const Peer&) -> Result<json> {
    json q = json::object();
    if (p.contains("since")) q["after"] = p["since"];
    if (p.contains("guard")) q["subject"] = p["guard"];
    if (p.contains("type")) q["type"] = p["type"];
    return list(q, EventSource::guard, true);
  }));
  SPARK_TRY_VOID(ctx.add_handler("events.status", [this](const json&, const Peer&) -> Result<json> {
    const auto& log = ctx_->events();
    return json{{"next", log.last_seq()},   {"kept", log.size()},     {"capacity", log.capacity()},
                {"dropped", log.dropped()}, {"folded", log.folded()}, {"waiters", waiters_.size()},
                {"requests", served_}};
  }));
  SPARK_TRY_VOID(ctx.add_handler("events.emit", [this](const json& p, const Peer& peer) -> Result<json> {
    if (!p.contains("event")) return input_error("events.emit needs an event");
    SPARK_TRY(Event e, event_from_json(p["event"]));
    if (e.source != EventSource::profile)
      return input_error("events.emit takes profile events only: the agent's own parts report the others");
    e.seq = 0;
    e.data["peer_uid"] = peer.uid;
    e.data["peer_pid"] = peer.pid;
    uint64_t seq = ctx_->events().append(std::move(e));
    return json{{"seq", seq}};
  }));
  return {};
}

Result<json> EventService::list(const json& params, std::optional<EventSource> source, bool legacy_guard) {
  const char* method = legacy_guard ? "guard.events" : "events.list";
  ++served_;
  SPARK_TRY(auto after, cursor_param(params, "after", method));
  EventFilter f;
  f.source = source;
  if (!source) {
    SPARK_TRY(std::string s, string_param(params, "source"));
    if (!s.empty()) {
      f.source = parse_event_source(s);
      if (!f.source) return input_error("events.list: source is one of profile, window, guard, telemetry");
    }
  }
  SPARK_TRY(f.type, string_param(params, "type"));
  SPARK_TRY(f.subject, string_param(params, "subject"));
  int64_t wait_ms = 0;
  if (params.contains("wait_ms")) {
    if (!params["wait_ms"].is_number_integer() || params["wait_ms"].get<int64_t>() < 0)
      return input_error(std::string(method) + ": wait_ms is a number of milliseconds");
    wait_ms = std::min<int64_t>(params["wait_ms"].get<int64_t>(), k_max_wait.count());
  }
  auto& log = ctx_->events();
  auto page = after ? log.after(*after, f) : EventPage{{}, log.last_seq(), 0};
  if (after && page.events.empty() && wait_ms > 0 && waiters_.size() < k_max_waiters) {
    if (auto to = ctx_->defer()) {
      waiters_.push_back({*to, *after, f, Clock::now() + std::chrono::milliseconds(wait_ms), legacy_guard});
      return json(nullptr);
    }
  }
  json out = event_page_json(page, log.capacity());
  if (legacy_guard) out["cursor"] = page.next;
  return out;
}

void EventService::answer_waiters(bool all, Clock::time_point now) {
  std::vector<Waiter> keep;
  for (auto& w : waiters_) {
    auto page = ctx_->events().after(w.after, w.filter);
    if (all || !page.events.empty() || page.dropped > 0 || now >= w.deadline) {
      json out = event_page_json(page, ctx_->events().capacity());
      if (w.legacy_guard) out["cursor"] = page.next;
      ctx_->reply(w.to, std::move(out));
    } else {
      keep.push_back(std::move(w));
    }
  }
  waiters_.swap(keep);
}

std::optional<Clock::time_point> EventService::next_timer() {
  if (!ctx_) return std::nullopt;
  std::optional<Clock::time_point> t = ctx_->events().next_flush();
  auto take = [&](Clock::time_point x) { t = t ? std::min(*t, x) : x; };
  if (appended_ && !waiters_.empty()) take(Clock::now());
  for (const auto& w : waiters_) take(w.deadline);
  return t;
}

void EventService::on_timer(Clock::time_point now) {
  ctx_->events().flush(now);
  appended_ = false;
  if (!waiters_.empty()) answer_waiters(false, now);
}

void EventService::on_stop() {
  if (!ctx_) return;
  ctx_->events().flush(Clock::time_point::max());
  answer_waiters(true, Clock::now());
}

}  // namespace spark::daemon
