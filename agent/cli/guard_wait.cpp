#include "cli/guard_wait.h"

#include <iostream>

#include "core/units.h"
#include "daemon/protocol.h"

namespace spark::cli {

namespace {
// The longest single long-poll (the agent caps it at 10 s).
constexpr std::chrono::milliseconds k_poll{5000};
}  // namespace

nlohmann::json filter_params(const EventFilter& f) {
  nlohmann::json p = nlohmann::json::object();
  if (f.source) p["source"] = event_source_name(*f.source);
  if (!f.type.empty()) p["type"] = f.type;
  if (!f.subject.empty()) p["subject"] = f.subject;
  return p;
}

int wait_event(Context& ctx, const EventFilter& filter, std::chrono::milliseconds timeout) {
  auto first = daemon::call(ctx.paths, "events.list", nlohmann::json::object());
  if (!first)
    return report_error(ctx, "no agent answers (" + describe(first.error()) +
                                 "): windows, guards and the event log live in the agent (spark-tune agent)");
  uint64_t cursor = first->value("next", uint64_t{0});
  auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto wait = std::min(left, k_poll);
    auto params = filter_params(filter);
    params["after"] = cursor;
    params["wait_ms"] = wait.count();
    auto r = daemon::call(ctx.paths, "events.list", params, wait + std::chrono::seconds(5));
    if (!r) return report_error(ctx, describe(r.error()));
    cursor = r->value("next", cursor);
    if (!(*r)["events"].empty()) {
      print_json((*r)["events"][0]);
      return k_exit_ok;
    }
  }
  if (!ctx.json)
    std::cerr << "spark-tune: no " << (filter.type.empty() ? std::string("event") : filter.type) << " within "
              << format_duration(timeout) << std::endl;
  return k_exit_check;
}

int wait_guard_event(Context& ctx, const std::string& type, const std::string& guard,
                     std::chrono::milliseconds timeout) {
  EventFilter f;
  f.source = EventSource::guard;
  f.type = type;
  f.subject = guard;
  return wait_event(ctx, f, timeout);
}

}  // namespace spark::cli
