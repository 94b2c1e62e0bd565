// The agent's Prometheus endpoint: a minimal HTTP/1.0 responder for GET /metrics that lives in the
// agent's poll loop (no threads): non-blocking sockets, a bounded request head, a deadline per
// connection, one reply per connection (Connection: close).
//
// Why not prometheus-cpp's pull library (civetweb): it runs its own listener and worker threads,
// so the hub (owned by the loop thread) would need locking or a copied snapshot, the threads cost
// stack memory against the agent's RSS budget, and its request handling cannot be bounded the way
// this one is. The text exposition uses prometheus-cpp's data model (telemetry/metrics.h).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/fd.h"
#include "core/result.h"

namespace spark::daemon {

// Default port of the agent's /metrics (0 switches the endpoint off). 9469 sits in the range
// exporters use and is not claimed by a common one on the Prometheus default-port list.
inline constexpr uint16_t k_default_metrics_port = 9469;
inline constexpr const char* k_default_metrics_address = "127.0.0.1";
inline constexpr size_t k_max_http_request = 8192;  // request line + headers
inline constexpr std::chrono::milliseconds k_http_client_deadline{5000};
inline constexpr size_t k_max_http_clients = 32;  // one more is answered 503 and closed
inline constexpr size_t k_max_http_headers = 64;  // header lines in a request head (431 past it)

struct HttpReply {
  int status = 200;
  std::string reason = "OK";
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  bool head_only = false;  // HEAD: headers only
};

// What to answer the bytes received so far on a connection; nullopt while the request head is
// incomplete and within `max_request`. Only GET/HEAD of /metrics (a query string is ignored) gets
// 200 with body(); other paths 404, other methods 405, malformed requests 400, an oversized head
// (bytes, or more than k_max_http_headers header lines) 431.
std::optional<HttpReply> answer_http(std::string_view received, const std::function<std::string()>& body,
                                     size_t max_request = k_max_http_request);
// The reply on the wire (HTTP/1.0, Content-Length, Connection: close).
std::string format_http_reply(const HttpReply& r);

// A listening address: IPv4 or IPv6 literal.
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  bool loopback = false;
};
Result<SocketAddress> parse_listen_address(const std::string& address, uint16_t port);

class MetricsHttpServer {
 public:
  using Clock = std::chrono::steady_clock;
  using BodyFn = std::function<std::string()>;
  // Binds and listens (non-blocking). Port 0 asks the kernel for a free port (see port()).
  static Result<std::unique_ptr<MetricsHttpServer>> listen(const std::string& address, uint16_t port, BodyFn body);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  uint16_t port() const { return port_; }
  std::vector<int> poll_fds() const;
  bool owns(int fd) const { return fd == listen_.get() || clients_.count(fd) > 0; }
  void on_ready(int fd, Clock::time_point now);
  std::optional<Clock::time_point> next_timer() const;
  void on_timer(Clock::time_point now);
  size_t client_count() const { return clients_.size(); }

 private:
  struct Client {
    Fd sock;  // its key in clients_
    std::string in;
    std::string out;
    size_t sent = 0;
    bool replying = false;
    Clock::time_point deadline;
    Clock::time_point retry{};  // a reply that did not fit the socket buffer: try again then
  };
  MetricsHttpServer(Fd listening, uint16_t port, BodyFn body);
  void accept_all(Clock::time_point now);
  void read_from(int fd, Client& c, Clock::time_point now);
  void flush(int fd, Client& c, Clock::time_point now);
  void drop(int fd);
  static void turn_away(Fd fd);  // over k_max_http_clients: 503, close

  Fd reserve_;  // /dev/null, given up to turn a client away when out of descriptors
  std::optional<Clock::time_point> accept_paused_until_;

  Fd listen_;
  uint16_t port_ = 0;
  BodyFn body_;
  std::map<int, Client> clients_;
};

}  // namespace spark::daemon
