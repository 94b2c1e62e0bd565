#include "support/fake_systemd_bus.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "guard/process.h"

namespace spark::test {

using namespace std::chrono_literals;

FakeSystemdBus::FakeSystemdBus(const std::filesystem::path& dir, const sd_bus_vtable* vtable, void* userdata) {
  auto daemon = guard::resolve_executable("dbus-daemon");
  if (!daemon) {
    skip_ = "dbus-daemon not installed: the D-Bus call cannot be exercised";
    return;
  }
  std::filesystem::path sock = dir / "bus";
  address_ = "unix:path=" + sock.string();
  std::string addr_arg = "--address=" + address_;
  daemon_ = ::fork();
  if (daemon_ == 0) {
    ::execl(daemon->c_str(), daemon->c_str(), "--session", "--nofork", "--nopidfile", addr_arg.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // A condition with a generous deadline: the daemon's socket appears.
  for (int i = 0; i < 1000 && !std::filesystem::exists(sock); ++i) std::this_thread::sleep_for(10ms);
  if (!std::filesystem::exists(sock)) {
    skip_ = "private dbus-daemon did not start within 10 s";
    return;
  }
  server_ = std::thread([this, vtable, userdata] {
    sd_bus* srv = nullptr;
    if (connect(&srv) < 0) {
      ready_ = true;
      return;
    }
    sd_bus_slot* slot = nullptr;
    sd_bus_add_object_vtable(srv, &slot, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", vtable,
                             userdata);
    sd_bus_request_name(srv, "org.freedesktop.systemd1", 0);
    ready_ = true;
    while (!stop_) {
      int r = sd_bus_process(srv, nullptr);
      if (r == 0) sd_bus_wait(srv, 50'000);
    }
    sd_bus_slot_unref(slot);
    sd_bus_flush_close_unref(srv);
  });
  for (int i = 0; i < 1000 && !ready_; ++i) std::this_thread::sleep_for(10ms);
}

FakeSystemdBus::~FakeSystemdBus() {
  stop_ = true;
  if (server_.joinable()) server_.join();
  if (daemon_ > 0) {
    ::kill(daemon_, SIGTERM);
    ::waitpid(daemon_, nullptr, 0);
  }
}

int FakeSystemdBus::connect(sd_bus** b) const {
  int r = sd_bus_new(b);
  if (r >= 0) r = sd_bus_set_address(*b, address_.c_str());
  if (r >= 0) r = sd_bus_set_bus_client(*b, 1);
  if (r >= 0) r = sd_bus_start(*b);
  return r;
}

}  // namespace spark::test
