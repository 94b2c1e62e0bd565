// A private dbus-daemon and a fake org.freedesktop.systemd1 Manager on it (sd-bus, its own thread
// and connection), serving the methods of a vtable the test gives. For the code that asks systemd
// for things over D-Bus (StartUnit, StartTransientUnit) where systemd is not PID 1.
#pragma once

#include <sys/types.h>
#include <systemd/sd-bus.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

namespace spark::test {

class FakeSystemdBus {
 public:
  // Starts dbus-daemon with its socket in dir and the Manager object serving vtable (userdata is
  // handed to the methods). When it cannot run, skip_reason() says why (the test skips with it).
  FakeSystemdBus(const std::filesystem::path& dir, const sd_bus_vtable* vtable, void* userdata);
  ~FakeSystemdBus();
  FakeSystemdBus(const FakeSystemdBus&) = delete;
  FakeSystemdBus& operator=(const FakeSystemdBus&) = delete;

  const std::string& skip_reason() const { return skip_; }
  // A client connection to the private bus (the caller unrefs it); < 0 (-errno) on failure.
  int connect(sd_bus** bus) const;

 private:
  std::string address_, skip_;
  pid_t daemon_ = -1;
  std::atomic<bool> stop_{false}, ready_{false};
  std::thread server_;
};

}  // namespace spark::test
