#include "daemon/metrics_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/log.h"

namespace spark::daemon {

namespace {

HttpReply error_reply(int status, std::string reason, std::string text) {
  HttpReply r;
  r.status = status;
  r.reason = std::move(reason);
  r.body = std::move(text) + "\n";
  return r;
}

std::vector<std::string_view> split_spaces(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace

std::optional<HttpReply> answer_http(std::string_view received, const std::function<std::string()>& body,
                                     size_t max_request) {
  size_t end = received.find("\r\n\r\n");
  if (end == std::string_view::npos) end = received.find("\n\n");
  if (end == std::string_view::npos || end > max_request) {
    if (received.size() > max_request)
      return error_reply(431, "Request Header Fields Too Large",
                         "request head over " + std::to_string(max_request) + " bytes");
    return std::nullopt;
  }
  std::string_view head = received.substr(0, end);
  if (static_cast<size_t>(std::count(head.begin(), head.end(), '\n')) > k_max_http_headers)
    return error_reply(431, "Request Header Fields Too Large",
                       "more than " + std::to_string(k_max_http_headers) + " header lines");
  size_t eol = head.find('\n');
  std::string_view line = head.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  for (char ch : line)
    if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) == 0x7f)
      return error_reply(400, "Bad Request", "malformed request line");
  auto parts = split_spaces(line);
  if (parts.size() != 3 || parts[2].substr(0, 7) != "HTTP/1." || parts[1].empty() || parts[1][0] != '/')
    return error_reply(400, "Bad Request", "expected: GET /metrics HTTP/1.0");
  bool head_only = parts[0] == "HEAD";
  if (parts[0] != "GET" && !head_only) {
    auto r = error_reply(405, "Method Not Allowed", "only GET /metrics is served");
    return r;
  }
  std::string_view path = parts[1].substr(0, parts[1].find('?'));
  if (path != "/metrics") {
    auto r = error_reply(404, "Not Found", "not found: the agent serves /metrics only");
    r.head_only = head_only;
    return r;
  }
  HttpReply r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = body();
  r.head_only = head_only;
  return r;
}

std::string format_http_reply(const HttpReply& r) {
  std::string out = "HTTP/1.0 " + std::to_string(r.status) + " " + r.reason + "\r\n";
  out += "Content-Type: " + r.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  if (r.status == 405) out += "Allow: GET, HEAD\r\n";
  out += "Connection: close\r\n\r\n";
  if (!r.head_only) out += r.body;
  return out;
}

Result<SocketAddress> parse_listen_address(const std::string& address, uint16_t port) {
  SocketAddress a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  std::string host = address;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.length = sizeof(sockaddr_in);
    a.loopback = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    return a;
  }
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.length = sizeof(sockaddr_in6);
    a.loopback = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
    return a;
  }
  return input_error("--metrics-address: give an IP address such as 127.0.0.1 or ::1, not '" + address + "'");
}

Result<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::listen(const std::string& address, uint16_t port,
                                                                     BodyFn body) {
  SPARK_TRY(SocketAddress a, parse_listen_address(address, port));
  Fd fd(::socket(a.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_error("socket for /metrics");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a.storage), a.length) != 0 || ::listen(fd.get(), 16) != 0) {
    int err = errno;
    return sys_error(err, "listening for /metrics on " + address + " port " + std::to_string(port) +
                              " (choose another with --metrics-port, 0 to switch it off)");
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  uint16_t actual = port;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) == 0)
    actual = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                              : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(std::move(fd), actual, std::move(body)));
}

MetricsHttpServer::MetricsHttpServer(Fd listening, uint16_t port, BodyFn body)
    : reserve_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
      listen_(std::move(listening)),
      port_(port),
      body_(std::move(body)) {}

MetricsHttpServer::~MetricsHttpServer() = default;

std::vector<int> MetricsHttpServer::poll_fds() const {
  std::vector<int> fds;
  // Out of descriptors a moment ago: the listener is not polled until then (it would spin).
  if (!accept_paused_until_ || Clock::now() >= *accept_paused_until_) fds.push_back(listen_.get());
  for (const auto& [fd, c] : clients_)
    if (!c.replying) fds.push_back(fd);
  return fds;
}

void MetricsHttpServer::drop(int fd) { clients_.erase(fd); }

void MetricsHttpServer::turn_away(Fd client) {
  const int fd = client.get();
  static const std::string busy = format_http_reply(
      error_reply(503, "Service Unavailable",
                  "the agent serves " + std::to_string(k_max_http_clients) + " /metrics connections at once: retry"));
  (void)::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
}

void MetricsHttpServer::accept_all(Clock::time_point now) {
  accept_paused_until_.reset();
  for (;;) {
    Fd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The listener stays readable: take the client with the reserve descriptor and close
        // it, and do not poll the listener for a moment (no spinning).
        if (reserve_.valid()) {
          reserve_.reset();
          Fd got(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
          if (got.valid()) turn_away(std::move(got));
          reserve_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        }
        accept_paused_until_ = now + std::chrono::milliseconds(200);
      }
      return;
    }
    if (clients_.size() >= k_max_http_clients) {
      turn_away(std::move(fd));  // busy: a scraper retries
      continue;
    }
    const int key = fd.get();
    clients_[key] = Client{std::move(fd), {}, {}, 0, false, now + k_http_client_deadline, {}};
  }
}

void MetricsHttpServer::read_from(int fd, Client& c, Clock::time_point now) {
  char buf[4096];
  bool eof = false;
  while (c.in.size() <= k_max_http_request) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
    eof = true;
    break;
  }
  auto reply = answer_http(c.in, body_);
  if (!reply) {
    if (eof) drop(fd);  // gave up before a full request
    return;
  }
  c.out = format_http_reply(*reply);
  c.replying = true;
  c.in.clear();
  flush(fd, c, now);
}

void MetricsHttpServer::flush(int fd, Client& c, Clock::time_point now) {
  while (c.sent < c.out.size()) {
    ssize_t w = ::send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (w > 0) {
      c.sent += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      c.retry = now + std::chrono::milliseconds(5);  // the loop polls for input only: retry soon
      return;
    }
    drop(fd);
    return;
  }
  ::shutdown(fd, SHUT_WR);
  // Unread input (the rest of an oversized request) would turn the close into a reset that can
  // destroy the reply in the client's buffer: discard what has arrived, bounded.
  char sink[4096];
  for (size_t discarded = 0; discarded < (64u << 10);) {
    ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n <= 0) break;
    discarded += static_cast<size_t>(n);
  }
  drop(fd);
}

void MetricsHttpServer::on_ready(int fd, Clock::time_point now) {
  if (fd == listen_.get()) {
    accept_all(now);
    return;
  }
  auto it = clients_.find(fd);
  if (it == clients_.end() || it->second.replying) return;
  read_from(fd, it->second, now);
}

std::optional<MetricsHttpServer::Clock::time_point> MetricsHttpServer::next_timer() const {
  std::optional<Clock::time_point> t = accept_paused_until_;
  for (const auto& [fd, c] : clients_) {
    Clock::time_point due = c.replying ? std::min(c.retry, c.deadline) : c.deadline;
    if (!t || due < *t) t = due;
  }
  return t;
}

void MetricsHttpServer::on_timer(Clock::time_point now) {
  if (accept_paused_until_ && now >= *accept_paused_until_) accept_paused_until_.reset();
  std::vector<int> fds;
  for (const auto& [fd, c] : clients_) fds.push_back(fd);
  for (int fd : fds) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) continue;
    Client& c = it->second;
    if (now >= c.deadline) {
      drop(fd);  // too slow (or never sent a full request)
    } else if (c.replying && now >= c.retry) {
      flush(fd, c, now);
    }
  }
}

}  // namespace spark::daemon
