// The agent's /metrics responder: request parsing (pure) and the non-blocking server over a real
// loopback socket, driven the way the agent loop drives it.
#include "daemon/metrics_http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace spark::daemon {
namespace {

std::string body() { return "spark_tune_test 1\n"; }

TEST(HttpAnswer, GetMetricsIsServed) {
  auto r = answer_http("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, body());
  std::string wire = format_http_reply(*r);
  EXPECT_EQ(wire.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << wire;
  EXPECT_NE(wire.find("Content-Length: " + std::to_string(body().size()) + "\r\n"), std::string::npos);
  EXPECT_NE(wire.find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_EQ(wire.substr(wire.size() - body().size()), body());
  // Query strings are ignored; bare LF line ends are accepted; HEAD gets headers only.
  auto q = answer_http("GET /metrics?x=1 HTTP/1.0\n\n", body);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->status, 200);
  auto h = answer_http("HEAD /metrics HTTP/1.0\r\n\r\n", body);
  ASSERT_TRUE(h);
  std::string hw = format_http_reply(*h);
  EXPECT_EQ(hw.substr(hw.size() - 4), "\r\n\r\n");
}

TEST(HttpAnswer, IncompleteHeadWaits) {
  EXPECT_FALSE(answer_http("GET /metrics HTTP/1.0\r\n", body));
  EXPECT_FALSE(answer_http("", body));
}

TEST(HttpAnswer, OtherPathIs404) {
  auto r = answer_http("GET / HTTP/1.0\r\n\r\n", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(answer_http("GET /metricsx HTTP/1.0\r\n\r\n", body)->status, 404);
  EXPECT_EQ(answer_http("GET /metrics/ HTTP/1.0\r\n\r\n", body)->status, 404);
}

TEST(HttpAnswer, BadRequestsAre400And405) {
  EXPECT_EQ(answer_http("GARBAGE\r\n\r\n", body)->status, 400);
  EXPECT_EQ(answer_http("GET metrics HTTP/1.0\r\n\r\n", body)->status, 400);
  EXPECT_EQ(answer_http("GET /metrics SPDY/3\r\n\r\n", body)->status, 400);
  EXPECT_EQ(answer_http("GET /metrics HTTP/1.0 extra\r\n\r\n", body)->status, 400);
  EXPECT_EQ(answer_http(std::string("GET /met\x01rics HTTP/1.0\r\n\r\n"), body)->status, 400);
  auto post = answer_http("POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", body);
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  EXPECT_NE(format_http_reply(*post).find("Allow: GET, HEAD"), std::string::npos);
}

TEST(HttpAnswer, OversizedHeadIs431) {
  std::string big = "GET /metrics HTTP/1.0\r\nX-Pad: " + std::string(k_max_http_request, 'a');
  auto r = answer_http(big, body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  // Complete, but its head is over the limit.
  EXPECT_EQ(answer_http(big + "\r\n\r\n", body)->status, 431);
  // Just under the limit is still served.
  std::string ok = "GET /metrics HTTP/1.0\r\nX-Pad: ";
  ok += std::string(k_max_http_request - ok.size() - 8, 'a') + "\r\n\r\n";
  EXPECT_EQ(answer_http(ok, body)->status, 200);
}

TEST(HttpAddress, LoopbackIsRecognized) {
  EXPECT_TRUE(parse_listen_address("127.0.0.1", 1)->loopback);
  EXPECT_TRUE(parse_listen_address("::1", 1)->loopback);
  EXPECT_TRUE(parse_listen_address("[::1]", 1)->loopback);
  EXPECT_FALSE(parse_listen_address("0.0.0.0", 1)->loopback);
  EXPECT_FALSE(parse_listen_address("10.1.2.3", 1)->loopback);
  EXPECT_FALSE(parse_listen_address("localhost", 1).ok()) << "names are not resolved";
  EXPECT_FALSE(parse_listen_address("", 1).ok());
}

// The server over 127.0.0.1, pumped like the agent loop pumps it (poll_fds / on_ready / on_timer).
class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = MetricsHttpServer::listen("127.0.0.1", 0, body);
    ASSERT_TRUE(s.ok()) << s.error().what();
    server = std::move(s).value();
    ASSERT_GT(server->port(), 0);
  }
  int connect_client() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(server->port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  }
  void pump(std::chrono::milliseconds for_how_long) {
    auto end = std::chrono::steady_clock::now() + for_how_long;
    while (std::chrono::steady_clock::now() < end) {
      std::vector<pollfd> fds;
      for (int fd : server->poll_fds()) fds.push_back({fd, POLLIN, 0});
      ::poll(fds.data(), fds.size(), 5);
      auto now = std::chrono::steady_clock::now();
      for (auto& f : fds)
        if (f.revents) server->on_ready(f.fd, now);
      if (auto t = server->next_timer(); t && *t <= now) server->on_timer(now);
    }
  }
  // Everything the server sends until it closes the connection.
  std::string exchange(const std::string& request) {
    int fd = connect_client();
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    pump(std::chrono::milliseconds(100));
    std::string out;
    char buf[4096];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) break;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }
  std::unique_ptr<MetricsHttpServer> server;
};

TEST_F(HttpServerTest, ServesMetricsAndClosesTheConnection) {
  std::string out = exchange("GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.0 200 OK", 0), 0u) << out;
  EXPECT_EQ(out.substr(out.size() - body().size()), body());
  EXPECT_EQ(server->client_count(), 0u);
}

TEST_F(HttpServerTest, OtherPathAndBadRequest) {
  EXPECT_EQ(exchange("GET /admin HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 404", 0), 0u);
  EXPECT_EQ(exchange("hello there\r\n\r\n").rfind("HTTP/1.0 400", 0), 0u);
  EXPECT_EQ(server->client_count(), 0u);
}

TEST_F(HttpServerTest, OversizedRequestIsRefusedWithoutReadingItAll) {
  std::string big = "GET /metrics HTTP/1.0\r\nX: " + std::string(4 * k_max_http_request, 'a');
  std::string out = exchange(big);
  EXPECT_EQ(out.rfind("HTTP/1.0 431", 0), 0u) << out.substr(0, 100);
  EXPECT_EQ(server->client_count(), 0u);
}

TEST_F(HttpServerTest, SilentClientIsDroppedAtItsDeadline) {
  int fd = connect_client();
  ASSERT_EQ(::send(fd, "GET /met", 8, MSG_NOSIGNAL), 8);
  pump(std::chrono::milliseconds(100));
  EXPECT_EQ(server->client_count(), 1u);
  auto t = server->next_timer();
  ASSERT_TRUE(t);
  server->on_timer(*t);  // the deadline passes
  EXPECT_EQ(server->client_count(), 0u);
  char c;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0) << "the connection was not closed";
  ::close(fd);
}

}  // namespace
}  // namespace spark::daemon
