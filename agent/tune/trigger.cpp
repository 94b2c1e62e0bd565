#include "tune/trigger.h"

using spark::state::Target, spark::state::TargetKind, spark::state::sysctl_target;

namespace spark::tune {

Result<void> fire(Actuator& act, const Trigger& t) {
  log(t.level, t.target.display() + " <- " + t.value + " (" + t.owner + ", " + t.reason + ")",
      {{"TARGET", t.target.display()}, {"NEW", t.value}, {"OWNER", t.owner}, {"REASON", t.reason}, {"TRIGGER", "1"}});
  return act.trigger(t.target, t.value);
}

Trigger drop_caches_trigger(const std::string& owner, const std::string& reason) {
  return {sysctl_target("vm.drop_caches"), "3", owner, reason, LogLevel::debug};
}

Trigger compact_memory_trigger(const std::string& owner, const std::string& reason) {
  return {sysctl_target("vm.compact_memory"), "1", owner, reason, LogLevel::info};
}

namespace {

Target cgroup_file(const std::string& cgroup, const char* file) {
  return {TargetKind::cgroup, cgroup.empty() ? std::string(file) : cgroup + "/" + file};
}

}  // namespace

Trigger cgroup_attach_trigger(const std::string& cgroup, pid_t pid, const std::string& owner) {
  return {cgroup_file(cgroup, "cgroup.procs"), std::to_string(pid), owner,
          "move process " + std::to_string(pid) + " in", LogLevel::debug};
}

Trigger cgroup_kill_trigger(const std::string& cgroup, const std::string& owner) {
  return {cgroup_file(cgroup, "cgroup.kill"), "1", owner, "kill every member", LogLevel::info};
}

Trigger cgroup_event_trigger(const std::string& cgroup, const std::string& line, const std::string& owner,
                             const std::string& reason) {
  return {cgroup_file(cgroup, "cgroup.event_control"), line, owner, reason, LogLevel::debug};
}

Result<void> drop_caches(Actuator& act, const std::string& owner, const std::string& reason) {
  return fire(act, drop_caches_trigger(owner, reason));
}

Result<void> compact_memory(Actuator& act, const std::string& owner, const std::string& reason) {
  return fire(act, compact_memory_trigger(owner, reason));
}

}  // namespace spark::tune
