#include "core/sd_bus_call.h"

namespace spark {

Result<SdBus> open_system_bus(const std::string& why) {
  sd_bus* raw = nullptr;
  int rc = sd_bus_open_system(&raw);
  if (rc < 0) return sys_error(-rc, "connecting to the system bus " + why + " (is systemd PID 1?)");
  return SdBus(raw);
}

Result<std::string> call_returning_object_path(sd_bus* bus, sd_bus_message* call, uint64_t timeout_us,
                                               const std::string& what) {
  sd_bus_error err = SD_BUS_ERROR_NULL;
  sd_bus_message* reply_raw = nullptr;
  int rc = sd_bus_call(bus, call, timeout_us, &err, &reply_raw);
  SdBusMessage reply(reply_raw);
  if (rc < 0) {
    std::string msg = err.message ? err.message : "";
    std::string name = err.name ? err.name : "";
    sd_bus_error_free(&err);
    return sys_error(-rc, what + (name.empty() ? "" : " (" + name + ": " + msg + ")"));
  }
  const char* path = nullptr;
  rc = sd_bus_message_read(reply.get(), "o", &path);
  if (rc < 0) return sys_error(-rc, what + ": reading the reply");
  return std::string(path);
}

}  // namespace spark
