// Loopback helpers for tests that start servers: only 127.0.0.1 is ever used.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/port.h"

namespace spark::test {

// A free loopback TCP port: the one of core/port.h.
using spark::free_loopback_port;

// One HTTP/1.0 GET to 127.0.0.1:port: everything the server sends until it closes the connection
// or is silent for `idle`; "" when nothing answers.
std::string http_get(uint16_t port, const std::string& path,
                     std::chrono::milliseconds idle = std::chrono::milliseconds(3000));

}  // namespace spark::test
