// The sd-bus pieces every caller of systemd's D-Bus API needs (the agent's StartUnit of its own
// socket, the guard's StartTransientUnit): owners for the bus and messages, and one method call
// whose reply is an object path (systemd's job), with systemd's error name and text kept.
// libsystemd is dlopen'd (core/systemd_lazy.cpp): these calls work only where it is installed.
#pragma once

#include <systemd/sd-bus.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/result.h"

namespace spark {

struct SdBusUnref {
  void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
struct SdBusMessageUnref {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};
using SdBus = std::unique_ptr<sd_bus, SdBusUnref>;
using SdBusMessage = std::unique_ptr<sd_bus_message, SdBusMessageUnref>;

// The system bus; `why` names what it is for in the error.
Result<SdBus> open_system_bus(const std::string& why);
// Sends the call and reads the reply's object path ("o"). timeout_us 0: sd-bus's default.
// `what` names the call in errors ("systemd did not start x.socket").
Result<std::string> call_returning_object_path(sd_bus* bus, sd_bus_message* call, uint64_t timeout_us,
                                               const std::string& what);

}  // namespace spark
