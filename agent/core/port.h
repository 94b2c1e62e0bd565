// "HOST:PORT" (a window's or a guard's --until-port) and whether that port accepts a connection:
// one parser and one prober.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

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

}  // namespace spark
