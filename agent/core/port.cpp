#include "core/port.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/fd.h"

namespace spark {

std::string PortAddress::text() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<PortAddress> parse_port_address(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= text.size())
    return input_error("--until-port '" + text + "': write HOST:PORT, e.g. 127.0.0.1:8080");
  PortAddress a;
  a.host = text.substr(0, colon);
  if (a.host.size() >= 2 && a.host.front() == '[' && a.host.back() == ']') a.host = a.host.substr(1, a.host.size() - 2);
  char* end = nullptr;
  long p = std::strtol(text.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || p <= 0 || p > 65535) return input_error("--until-port '" + text + "': the port must be 1-65535");
  a.port = static_cast<uint16_t>(p);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(a.host.c_str(), nullptr, &hints, &res) != 0 || !res)
    return input_error("--until-port '" + text + "': cannot resolve host '" + a.host + "'");
  ::freeaddrinfo(res);
  return a;
}

bool port_accepts(const PortAddress& a, std::chrono::milliseconds wait) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(a.host.c_str(), std::to_string(a.port).c_str(), &hints, &res) != 0 || !res) return false;
  bool ok = false;
  for (addrinfo* ai = res; ai && !ok; ai = ai->ai_next) {
    Fd s(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!s.valid()) continue;
    if (::connect(s.get(), ai->ai_addr, ai->ai_addrlen) == 0) {
      ok = true;
      break;
    }
    if (errno != EINPROGRESS) continue;
    pollfd p{s.get(), POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) ok = true;
    }
  }
  ::freeaddrinfo(res);
  return ok;
}

bool PortProbe::ready(Clock::time_point now) {
  if (!resolved_) {
    resolved_ = true;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (::getaddrinfo(addr_.host.c_str(), std::to_string(addr_.port).c_str(), &hints, &res) == 0) {
      for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
        Target t;
        std::memcpy(&t.addr, ai->ai_addr, ai->ai_addrlen);
        t.len = ai->ai_addrlen;
        t.family = ai->ai_family;
        targets_.push_back(t);
      }
      ::freeaddrinfo(res);
    }
  }
  if (targets_.empty()) return false;
  if (sock_.valid()) {
    pollfd p{sock_.get(), POLLOUT, 0};
    if (::poll(&p, 1, 0) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      bool ok = ::getsockopt(sock_.get(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 && (p.revents & POLLOUT);
      sock_.reset();
      if (ok) return true;
      // refused: the next check starts a new connect
      return false;
    }
    if (now - started_ < attempt_) return false;  // still under way
    sock_.reset();                                // no answer: try again
  }
  const Target& t = targets_[next_++ % targets_.size()];
  Fd s(::socket(t.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!s.valid()) return false;
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&t.addr), t.len) == 0) return true;
  if (errno != EINPROGRESS) return false;
  sock_ = std::move(s);
  started_ = now;
  return false;
}

uint16_t free_loopback_port() {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd.get() < 0 || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return 0;
  return ntohs(a.sin_port);
}

}  // namespace spark
