#include "guard/event.h"

#include "core/units.h"

namespace spark::guard {

namespace {

std::string num(const nlohmann::json& d, const char* key) {
  if (!d.contains(key)) return "?";
  const auto& v = d[key];
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string size(const nlohmann::json& d, const char* key) {
  if (!d.contains(key) || !d[key].is_number_unsigned()) return num(d, key);
  return format_size(d[key].get<uint64_t>());
}

}  // namespace

Event make_event(const std::string& guard_id, const std::string& type, nlohmann::json data) {
  Event e;
  e.source = EventSource::guard;
  e.type = type;
  e.subject = guard_id;
  e.data = data.is_object() ? std::move(data) : nlohmann::json::object();
  const auto& d = e.data;
  std::string g = "guard " + guard_id + ": ";
  if (type == "guard_start") {
    e.summary = g + "server pid " + num(d, "pid") + " boxed in " + num(d, "cgroup");
  } else if (type == "guard_settled") {
    e.summary =
        g + "footprint " + size(d, "footprint") + ", budget " + size(d, "budget") + ", limit " + size(d, "limit");
  } else if (type == "guard_resume") {
    e.summary = g + "resumed after an agent restart (pid " + num(d, "pid") + ")";
  } else if (type == "guard_error") {
    e.summary = g + num(d, "error");
    e.hint = "see spark-tune guard list; end the guard with spark-tune guard end " + guard_id;
  } else if (type == "guard_end") {
    e.summary = g + "ended (" + num(d, "reason") + ")";
  } else if (type == "memory_growth") {
    e.summary =
        g + "memory grows (" + num(d, "reason") + "), usage " + size(d, "usage") + " of limit " + size(d, "limit");
    e.hint = "the server is on its way to its limit: cap its caches or give it a larger --budget";
  } else if (type == "oom_kill") {
    e.summary = g + "the kernel killed pid " + num(d, "pid") + " at the box's limit " + size(d, "limit");
    e.hint =
        "the server outgrew its memory budget: raise --budget / --memory-max or cap its caches "
        "(context checkpoints)";
  } else if (type == "hook_start") {
    e.summary = g + "--on-oom hook " + num(d, "hook") + " started (pid " + num(d, "hook_pid") + ")";
  } else if (type == "hook_done") {
    e.summary = g + "--on-oom hook pid " + num(d, "hook_pid") + " " + num(d, "status");
  } else if (type == "server_exit") {
    e.summary = g + "server pid " + num(d, "pid") + " " + (d.contains("status") ? num(d, "status") : "exited");
  } else if (type == "server_restart") {
    e.summary = g + "server started again as pid " + num(d, "pid") + " (attempt " + num(d, "attempt") + ")";
  } else if (type == "restart_limit") {
    e.summary = g + num(d, "message");
    e.hint = "the server dies as soon as it starts: look at its log and budget before starting it by hand";
  } else if (type == "restart_failed") {
    e.summary = g + "could not start the server again: " + num(d, "error");
  } else if (type == "server_ready") {
    e.summary = g + "server pid " + num(d, "pid") + " accepts connections on " + num(d, "address");
  } else {
    e.summary = g + type;
  }
  return e;
}

}  // namespace spark::guard
