// Loopback helpers for tests that start servers: only 127.0.0.1 is ever used.
#pragma once

#include <cstdint>

namespace spark::test {

// A free loopback TCP port (bind to port 0, read it back, close).
uint16_t free_loopback_port();

}  // namespace spark::test
