// "HOST:PORT" (a window's or a guard's --until-port) and whether that port accepts a connection:
// one parser and one prober; and a free loopback port for the tests and benchmarks that start servers.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "core/fd.h"

#include "core/result.h"

namespace spark {

struct PortAddress {
  std::string host;  // without the brackets of "[::1]"
  uint16_t port = 0;
  std::string text() const;  // "127.0.0.1:8080", "[::1]:9000"
};

// "HOST:PORT", "[::1]:PORT"; the port 1-65535, the host must resolve.
Result<PortAddress> parse_port_address(const std::string& text);
// One non-blocking connect per address of the host; true when one is accepted within `wait`.
bool port_accepts(const PortAddress& a, std::chrono::milliseconds wait = std::chrono::milliseconds(20));
// A free TCP port on 127.0.0.1 (bound to port 0, read back, closed); 0 when none could be had.
uint16_t free_loopback_port();

// A readiness probe that never blocks the caller (the agent's loop): the host is resolved once
// (at the first check), then one non-blocking connect at a time is started and looked at with a
// zero-timeout poll on each check. A connect that neither succeeds nor fails (a full accept
// queue, dropped SYNs) is abandoned after `attempt` and the next address (or the same) is tried.
class PortProbe {
 public:
  using Clock = std::chrono::steady_clock;
  explicit PortProbe(PortAddress a, std::chrono::milliseconds attempt = std::chrono::milliseconds(2000))
      : addr_(std::move(a)), attempt_(attempt) {}
  // True once a connection was accepted (the probe's socket is then closed).
  bool ready(Clock::time_point now);

 private:
  struct Target {
    sockaddr_storage addr{};
    socklen_t len = 0;
    int family = 0;
  };
  PortAddress addr_;
  std::chrono::milliseconds attempt_;
  bool resolved_ = false;
  std::vector<Target> targets_;
  size_t next_ = 0;
  Fd sock_;
  Clock::time_point started_{};
};

}  // namespace spark
