#include "guard/systemd_scope.h"

#include <systemd/sd-bus.h>

#include <cctype>
#include <memory>

#include "core/sd_bus_call.h"

namespace spark::guard {

namespace {

Error bus_error(int r, const std::string& what) { return sys_error(-r, what); }

}  // namespace

bool systemd_booted(const HostPaths& paths) {
  std::error_code ec;
  return fs::is_directory(paths.run.parent_path() / "systemd/system", ec);
}

Result<std::string> scope_unit_name(const std::string& base) {
  if (base.empty() || base.size() > 200) return input_error("scope name must be 1-200 characters");
  for (char c : base)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':'))
      return input_error("scope name '" + base + "' has a character systemd does not accept");
  return base + ".scope";
}

Result<std::string> start_transient_scope(sd_bus* bus, const ScopeRequest& r) {
  if (r.pids.empty()) return input_error("a scope needs at least one process");
  sd_bus_message* raw = nullptr;
  int rc = sd_bus_message_new_method_call(bus, &raw, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                          "org.freedesktop.systemd1.Manager", "StartTransientUnit");
  if (rc < 0) return bus_error(rc, "building StartTransientUnit");
  SdBusMessage m(raw);
  // (name, mode, properties a(sv), auxiliary a(sa(sv)))
  rc = sd_bus_message_append(m.get(), "ss", r.name.c_str(), "fail");
  if (rc >= 0) rc = sd_bus_message_open_container(m.get(), 'a', "(sv)");
  if (rc >= 0) rc = sd_bus_message_open_container(m.get(), 'r', "sv");
  if (rc >= 0) rc = sd_bus_message_append(m.get(), "s", "PIDs");
  if (rc >= 0) rc = sd_bus_message_open_container(m.get(), 'v', "au");
  if (rc >= 0) rc = sd_bus_message_open_container(m.get(), 'a', "u");
  for (pid_t p : r.pids)
    if (rc >= 0) rc = sd_bus_message_append(m.get(), "u", static_cast<uint32_t>(p));
  if (rc >= 0) rc = sd_bus_message_close_container(m.get());
  if (rc >= 0) rc = sd_bus_message_close_container(m.get());
  if (rc >= 0) rc = sd_bus_message_close_container(m.get());
  if (rc >= 0) rc = sd_bus_message_append(m.get(), "(sv)", "Slice", "s", r.slice.c_str());
  if (rc >= 0 && !r.description.empty())
    rc = sd_bus_message_append(m.get(), "(sv)", "Description", "s", r.description.c_str());
  if (rc >= 0) rc = sd_bus_message_append(m.get(), "(sv)", "MemoryAccounting", "b", 1);
  // The scope goes when its processes do, failed or not: nothing for anyone to clean.
  if (rc >= 0) rc = sd_bus_message_append(m.get(), "(sv)", "CollectMode", "s", "inactive-or-failed");
  if (rc >= 0 && r.memory_high) rc = sd_bus_message_append(m.get(), "(sv)", "MemoryHigh", "t", *r.memory_high);
  if (rc >= 0 && r.memory_max) rc = sd_bus_message_append(m.get(), "(sv)", "MemoryMax", "t", *r.memory_max);
  if (rc >= 0) rc = sd_bus_message_close_container(m.get());
  if (rc >= 0) rc = sd_bus_message_append(m.get(), "a(sa(sv))", 0);
  if (rc < 0) return bus_error(rc, "building StartTransientUnit for " + r.name);

  return call_returning_object_path(bus, m.get(), 5'000'000, "systemd refused scope " + r.name);
}

Result<std::string> start_transient_scope(const ScopeRequest& r) {
  SPARK_TRY(SdBus bus, open_system_bus("for scope " + r.name));
  return start_transient_scope(bus.get(), r);
}

}  // namespace spark::guard
