// The journaled form of a guard (guard/guard_state.h): the codecs of its options and state, and
// what any process can do with the journaled guards (list them, end one).
#include "guard/guard_state.h"

#include <algorithm>

#include "guard/cgroup.h"
#include "state/journal.h"

using spark::state::JournalData, spark::state::read_journal;

using spark::tune::Tuner;

namespace spark::guard {

nlohmann::json options_to_json(const GuardOptions& o) {
  nlohmann::json j;
  j["pid"] = o.pid;
  j["cgroup"] = o.cgroup;
  j["command"] = o.command;
  j["budget"] = o.budget;
  j["memory_high"] = o.memory_high ? nlohmann::json(*o.memory_high) : nlohmann::json(nullptr);
  j["memory_max"] = o.memory_max ? nlohmann::json(*o.memory_max) : nlohmann::json(nullptr);
  j["settle_after_ms"] = o.settle_after.count();
  j["force"] = o.force;
  j["on_oom"] = o.on_oom;
  j["hook_timeout_ms"] = o.hook_timeout.count();
  j["restart"] = o.restart;
  j["restart_max"] = o.restart_max;
  j["restart_window_ms"] = o.restart_window.count();
  j["restart_backoff_ms"] = o.restart_backoff.count();
  j["until_port"] = o.until_port;
  j["warn_eta_ms"] = o.warn_eta.count();
  j["parent"] = o.parent;
  j["settle_on_ready"] = o.settle_on_ready;
  j["host_floor"] = o.host_floor;
  return j;
}

Result<GuardOptions> options_from_json(const nlohmann::json& j) try {
  GuardOptions o;
  o.pid = j.value("pid", 0);
  o.cgroup = j.value("cgroup", "");
  o.command = j.value("command", std::vector<std::string>{});
  o.budget = j.value("budget", "");
  if (j.contains("memory_high") && !j["memory_high"].is_null()) o.memory_high = j["memory_high"].get<uint64_t>();
  if (j.contains("memory_max") && !j["memory_max"].is_null()) o.memory_max = j["memory_max"].get<uint64_t>();
  o.settle_after = Ms(j.value("settle_after_ms", int64_t{0}));
  o.force = j.value("force", false);
  o.on_oom = j.value("on_oom", std::vector<std::string>{});
  o.hook_timeout = Ms(j.value("hook_timeout_ms", int64_t{10000}));
  o.restart = j.value("restart", false);
  o.restart_max = j.value("restart_max", 5);
  o.restart_window = Ms(j.value("restart_window_ms", int64_t{300000}));
  o.restart_backoff = Ms(j.value("restart_backoff_ms", int64_t{250}));
  o.until_port = j.value("until_port", "");
  o.warn_eta = Ms(j.value("warn_eta_ms", int64_t{30000}));
  o.parent = j.value("parent", "");
  o.settle_on_ready = j.value("settle_on_ready", false);
  o.host_floor = j.value("host_floor", "");
  return o;
} catch (const std::exception& e) {
  return input_error(std::string("guard options: ") + e.what());
}

std::string guard_owner(const std::string& id) { return "guard:" + id; }

nlohmann::json GuardState::to_json() const {
  nlohmann::json j;
  j["kind"] = "guard";
  j["id"] = id;
  j["options"] = options_to_json(opt);
  j["pid"] = pid;
  j["box"] = box;
  j["owns_box"] = owns_box;
  j["origin"] = origin;
  j["scope"] = scope;
  j["launch"] = {{"argv", launch.argv},
                 {"cwd", launch.cwd},
                 {"uid", launch.uid},
                 {"gid", launch.gid},
                 {"oom_score_adj", launch.oom_score_adj}};
  j["settled"] = settled;
  j["footprint"] = footprint;
  j["budget"] = budget;
  j["limit"] = limit;
  j["restarts_ms"] = restarts_ms;
  j["started_ms"] = started_ms;
  j["host_floor"] = host_floor;
  return j;
}

Result<GuardState> GuardState::from_json(const nlohmann::json& j) {
  try {
    GuardState s;
    s.id = j.at("id").get<std::string>();
    auto o = options_from_json(j.at("options"));
    if (!o) return o.error();
    s.opt = *o;
    s.pid = j.value("pid", 0);
    s.box = j.at("box").get<std::string>();
    s.owns_box = j.value("owns_box", false);
    s.origin = j.value("origin", "");
    s.scope = j.value("scope", "");
    if (j.contains("launch")) {
      s.launch.argv = j["launch"].value("argv", std::vector<std::string>{});
      s.launch.cwd = j["launch"].value("cwd", "/");
      s.launch.uid = j["launch"].value("uid", 0u);
      s.launch.gid = j["launch"].value("gid", 0u);
      s.launch.oom_score_adj = j["launch"].value("oom_score_adj", 0);
    }
    s.settled = j.value("settled", false);
    s.footprint = j.value("footprint", uint64_t{0});
    s.budget = j.value("budget", uint64_t{0});
    s.limit = j.value("limit", uint64_t{0});
    s.restarts_ms = j.value("restarts_ms", std::vector<int64_t>{});
    s.started_ms = j.value("started_ms", int64_t{0});
    s.host_floor = j.value("host_floor", uint64_t{0});
    return s;
  } catch (const std::exception& e) {
    return input_error(std::string("guard state in the journal is unreadable: ") + e.what());
  }
}

Result<std::vector<GuardState>> list_guards(const HostPaths& paths) {
  SPARK_TRY(JournalData d, read_journal(paths));
  std::vector<GuardState> out;
  for (auto it = d.owners.begin(); it != d.owners.end(); ++it) {
    if (it.key().rfind("guard:", 0) != 0 || !it.value().is_object() || it.value().value("kind", "") != "guard")
      continue;
    SPARK_TRY(GuardState s, GuardState::from_json(it.value()));
    out.push_back(std::move(s));
  }
  return out;
}

Result<void> end_guard(const HostPaths& paths, Tuner& tuner, const std::string& id) {
  SPARK_TRY(auto guards, list_guards(paths));
  auto it = std::find_if(guards.begin(), guards.end(), [&](const GuardState& s) { return s.id == id; });
  if (it == guards.end()) return input_error("no guard '" + id + "' (see spark-tune guard list)");
  // A box of its own, or systemd's transient scope: either way the processes go back where they
  // came from (the scope, then empty, is stopped and collected by systemd). A scope already gone
  // (its process exited) has nothing to move.
  if (it->owns_box || !it->scope.empty()) {
    SPARK_TRY(MemoryHierarchy h, find_memory_hierarchy(paths));
    CgroupBox box(paths, h, it->box);
    if (box.exists()) {
      std::string back = it->origin.empty() ? it->opt.parent : it->origin;
      // A scope systemd collects meanwhile (its last process exited) has nobody left to move.
      if (auto r = box.move_all_to(tuner.actuator(), back.empty() ? "/" : back); !r && box.exists())
        return with_context(r.error(), "ending guard " + id + ": moving its processes back to " + back);
    }
  }
  auto r = tuner.release(guard_owner(id));
  if (!r) return with_context(r.error(), "ending guard " + id);
  return {};
}

}  // namespace spark::guard
