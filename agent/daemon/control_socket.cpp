// The agent's control socket: listening (inherited from systemd or bound here), accepting and
// serving clients without ever blocking the loop, deferred replies.
#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>
#include <variant>

#include "core/fs.h"
#include "core/log.h"
#include "core/units.h"
#include "daemon/agent.h"
#include "daemon/privileges.h"
#include "daemon/protocol.h"

namespace spark::daemon {

using json = nlohmann::json;

Result<void> Agent::open_socket() {
  fs::path p = socket_path(paths_);
  // Socket activation (systemd, systemd-socket-activate): the listening socket is fd 3. It stays
  // the activator's: the agent neither binds nor unlinks the path (systemd listens on it again
  // after the agent exits), and its mode and group are the socket unit's (SocketMode, SocketGroup).
  int n = sd_listen_fds(1);
  if (n == 1 && sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, nullptr, 0) > 0) {
    listen_fd_ = SD_LISTEN_FDS_START;
    ::fcntl(listen_fd_, F_SETFL, ::fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
    ::fcntl(listen_fd_, F_SETFD, FD_CLOEXEC);
    sockaddr_un bound{};
    socklen_t len = sizeof bound;
    std::string where = "?";
    if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len) == 0 && len > sizeof(sa_family_t))
      where = std::string(bound.sun_path, ::strnlen(bound.sun_path, len - sizeof(sa_family_t)));
    log_info("control socket from systemd: " + where);
    if (where != p.string())
      log_warning("the activated socket is " + where + " but the CLI connects to " + p.string() +
                  ": set ListenStream=" + p.string() + " in spark-tune.socket");
    return {};
  }
  if (n > 0)
    log_warning("systemd passed " + std::to_string(n) + " sockets, not one AF_UNIX stream socket: listening on " +
                p.string() + " instead");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (p.native().size() >= sizeof(addr.sun_path)) return sys_error(ENAMETOOLONG, "socket path " + p.string());
  std::strncpy(addr.sun_path, p.c_str(), sizeof(addr.sun_path) - 1);
  // The pid-file lock is held, so no other agent listens here; a listener that accepts is the
  // socket unit's (systemd holds it for the agent it starts): never take the path from it.
  {
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool listening = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (listening)
      return sys_error(EADDRINUSE, p.string() +
                                       " already accepts connections (spark-tune.socket?): the agent is "
                                       "started there on demand; use the CLI directly, or systemctl stop "
                                       "spark-tune.socket before running an agent by hand");
  }
  // A socket file nobody listens on is a dead agent's.
  ::unlink(p.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errno_error("socket");
  mode_t old = ::umask(0117);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0 || ::listen(fd, 64) != 0) {
    int err = errno;
    ::close(fd);
    return sys_error(err, "listening on " + p.string());
  }
  gid_t gid = 0;
  if (group* g = ::getgrnam(opt_.group.c_str())) gid = g->gr_gid;
  if (::chown(p.c_str(), 0, gid) != 0 && ::geteuid() == 0)
    log_warning("chown " + p.string() + ": " + std::strerror(errno));
  ::chmod(p.c_str(), 0660);
  struct stat st {};
  if (::lstat(p.c_str(), &st) == 0) {
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
  }
  listen_fd_ = fd;
  own_socket_ = true;
  return {};
}

void Agent::accept_failed(int err) {
  // Out of descriptors: the listener stays readable, so polling it again would spin. Give up the
  // reserve descriptor to take the waiting client and close it (it sees the connection end), then
  // take the reserve back; and stop polling the listener for a moment.
  if (reserve_fd_ >= 0) {
    ::close(reserve_fd_);
    reserve_fd_ = -1;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) ::close(fd);
    reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  accept_paused_until_ = Clock::now() + std::chrono::milliseconds(200);
  if (auto msg = accept_log_.admit(std::string("control socket: accept: ") + std::strerror(err) +
                                       " (out of descriptors): a client was turned away; " +
                                       std::to_string(clients_.size()) + " connections open",
                                   Clock::now()))
    log_warning(*msg);
}

std::optional<gid_t> Agent::allowed_group(Clock::time_point now) {
  // getgrnam reads /etc/group (and nsswitch) each time: once per accepted client cost 6% of the
  // agent's CPU in the soak (issue 13, a poller connects for each request). Looked up again after
  // k_group_lookup_reuse, so a group created or changed meanwhile counts within a second.
  if (!group_looked_up_ || now - *group_looked_up_ >= k_group_lookup_reuse || now < *group_looked_up_) {
    group_gid_.reset();
    if (group* g = ::getgrnam(opt_.group.c_str())) group_gid_ = g->gr_gid;
    group_looked_up_ = now;
  }
  return group_gid_;
}

void Agent::accept_clients() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) accept_failed(errno);
      return;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    Peer peer;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      peer = {cred.pid, cred.uid, cred.gid};
    } else {
      ::close(fd);
      continue;
    }
    std::vector<gid_t> groups(256);
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0)
      groups.resize(glen / sizeof(gid_t));
    else
      groups.clear();
    std::optional<gid_t> allowed = allowed_group(Clock::now());
    auto refuse = [&](const Error& e) {
      std::string line = encode_reply(json{{"id", nullptr}, {"error", error_to_json(e)}});
      (void)::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
    };
    if (auto ok = authorize_peer(peer, groups, allowed); !ok) {
      // Where the socket is reachable by anyone, refusals must not flood the log.
      if (auto msg = refusal_log_.admit("refused a client: " + std::string(ok.error().what()), Clock::now()))
        log_warning(*msg, {{"PEER_UID", std::to_string(peer.uid)}, {"PEER_PID", std::to_string(peer.pid)}});
      refuse(ok.error());
      continue;
    }
    if (clients_.size() >= k_max_control_clients) {
      if (auto msg = refusal_log_.admit(
              "refused a client: " + std::to_string(clients_.size()) + " control connections open (the limit)",
              Clock::now()))
        log_warning(*msg, {{"PEER_UID", std::to_string(peer.uid)}, {"PEER_PID", std::to_string(peer.pid)}});
      refuse(sys_error(EBUSY, "the agent has " + std::to_string(k_max_control_clients) +
                                  " control connections open (its limit): close idle clients and try again"));
      continue;
    }
    auto now = Clock::now();
    Client c;
    c.fd = fd;
    c.peer = peer;
    c.serial = ++next_serial_;
    c.last_input = c.last_output = now;
    clients_[fd] = std::move(c);
    accepted_.emplace_back(fd, clients_[fd].serial);
  }
}

void Agent::drop(int fd, const std::string& why) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  if (!why.empty()) log_info("dropped a control connection (pid " + std::to_string(it->second.peer.pid) + "): " + why);
  ::close(fd);
  clients_.erase(it);
}

void Agent::serve(Client& c) {
  // Read a bounded amount per round, so that one client never holds the loop.
  char buf[65536];
  for (int round = 0; round < 16 && !c.eof && c.in.size() <= k_max_frame_bytes; ++round) {
    ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      c.last_input = Clock::now();
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    c.eof = true;  // closed (or reset): answer what came, then close
  }
  process_input(c);
}

void Agent::process_input(Client& c) {
  int fd = c.fd;
  size_t start = 0;
  bool overflow = false;
  // Requests are handled while this client's replies do not pile up (backpressure): the rest
  // waits in `in` (and in the socket) until it reads them.
  while (c.out.size() < k_reply_backpressure) {
    size_t at = start;
    auto line = next_frame(c.in, start, c.eof, overflow);
    if (!line) break;
    if (trim(*line).empty()) continue;
    // A dear request waits for the round's cheap ones (serve_dear), and past the dear pass's
    // budget for the next round.
    bool dear = is_dear(*line);
    if (dear && (!dear_pass_ || (dear_handled_ > 0 && Clock::now() >= dear_deadline_))) {
      start = at;
      std::pair<int, uint64_t> me{fd, c.serial};
      if (std::find(dear_clients_.begin(), dear_clients_.end(), me) == dear_clients_.end()) dear_clients_.push_back(me);
      break;
    }
    if (dear) ++dear_handled_;
    std::optional<RawReply> raw;
    TallySpan span(tally_.get(), "request");
    auto resp = handle_frame(*line, [&](const json& request, const json& id) -> std::optional<json> {
      if (tally_)
        if (auto m = request.find("method"); m != request.end() && m->is_string()) span.relabel(m->get<std::string>());
      if (auto r = dispatch_raw(raw_handlers_, request, id, c.peer)) {
        if (auto* j = std::get_if<json>(&*r)) return std::move(*j);
        raw = std::move(std::get<RawReply>(*r));
        return std::nullopt;
      }
      in_dispatch_ = DeferredReply{fd, c.serial, id};
      deferred_ = false;
      json r = dispatch_request(handlers_, request, c.peer);
      in_dispatch_.reset();
      if (deferred_) {  // a long-poll: the service replies later
        deferred_ = false;
        return std::nullopt;
      }
      return r;
    });
    in_dispatch_.reset();
    if (!clients_.count(fd)) return;  // a handler dropped it (never today; be safe)
    if (raw) {                        // the shared answer's bytes, sent as they are
      queue_reply(c, {raw->head, *raw->body, k_raw_tail});
      if (!clients_.count(fd)) return;
      continue;
    }
    if (!resp) {
      ++c.pending;
      continue;
    }
    queue_reply(c, encode_reply(*resp));
    if (!clients_.count(fd)) return;
  }
  c.in.erase(0, start);
  if (overflow) {
    c.in.clear();
    c.closing = true;
    queue_reply(c, encode_reply(json{
                       {"id", nullptr},
                       {"error", error_to_json(input_error("request line over " + std::to_string(k_max_frame_bytes) +
                                                           " bytes (the limit): the connection is closed"))}}));
    return;
  }
  if (c.eof && c.in.empty()) c.closing = true;
  if (c.closing && c.out.empty()) drop(fd, "");
}

bool Agent::is_dear(const std::string& line) const {
  if (dear_.empty()) return false;
  // Only a line that names a dear method is parsed here (cheap ones never are twice).
  bool named = false;
  for (const auto& m : dear_)
    if (line.find(m) != std::string::npos) named = true;
  if (!named || json_nesting_depth(line, k_max_json_depth) > k_max_json_depth) return false;
  auto j = json::parse(line, nullptr, false);
  if (!j.is_object()) return false;
  auto m = j.find("method");
  return m != j.end() && m->is_string() && dear_.count(m->get<std::string>()) > 0;
}

void Agent::serve_dear() {
  if (dear_clients_.empty()) return;
  std::vector<std::pair<int, uint64_t>> waiting;
  waiting.swap(dear_clients_);
  dear_pass_ = true;
  dear_handled_ = 0;
  dear_deadline_ = Clock::now() + opt_.dear_round_budget;
  for (auto [fd, serial] : waiting) {
    auto it = clients_.find(fd);
    if (it == clients_.end() || it->second.serial != serial) continue;  // gone meanwhile
    process_input(it->second);
  }
  dear_pass_ = false;
}

void Agent::queue_reply(Client& c, std::initializer_list<std::string_view> parts) {
  if (!c.out.empty() || parts.size() > 8) {  // replies wait already: this one goes behind them
    for (auto p : parts) c.out += p;
    flush(c);
    return;
  }
  c.last_output = Clock::now();
  iovec iov[8];
  size_t n = 0, total = 0;
  for (auto p : parts)
    if (!p.empty() && n < std::size(iov)) {
      iov[n++] = {const_cast<char*>(p.data()), p.size()};
      total += p.size();
    }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = n;
  ssize_t w = ::sendmsg(c.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (w < 0 && errno != EAGAIN && errno != EINTR) {
    drop(c.fd, "");  // the client has gone
    return;
  }
  size_t sent = w > 0 ? static_cast<size_t>(w) : 0;
  if (sent < total) {
    // What the socket did not take waits in c.out (sent on POLLOUT).
    for (auto p : parts) {
      if (sent >= p.size()) {
        sent -= p.size();
        continue;
      }
      c.out.append(p.data() + sent, p.size() - sent);
      sent = 0;
    }
  }
  flush(c);
}

void Agent::flush(Client& c) {
  int fd = c.fd;
  while (!c.out.empty()) {
    ssize_t w = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      c.out.erase(0, static_cast<size_t>(w));
      c.last_output = Clock::now();
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) break;
    drop(fd, "");  // the client has gone
    return;
  }
  if (c.out.size() > k_max_reply_backlog) {
    drop(fd, std::to_string(c.out.size()) + " bytes of replies unread (the limit is " +
                 std::to_string(k_max_reply_backlog) + ")");
    return;
  }
  if (c.out.empty() && c.closing) drop(fd, "");
}

std::optional<Clock::time_point> Agent::expire_clients(Clock::time_point now) {
  std::optional<Clock::time_point> next;
  auto take = [&](Clock::time_point t) { next = next ? std::min(*next, t) : t; };
  std::vector<std::pair<int, std::string>> gone;
  for (auto& [fd, c] : clients_) {
    if (!c.out.empty()) {
      auto due = c.last_output + opt_.control_send_deadline;
      if (now >= due)
        gone.emplace_back(fd, "read none of its replies for " + format_duration(opt_.control_send_deadline) + " (" +
                                  std::to_string(c.out.size()) + " bytes waiting)");
      else
        take(due);
    } else if (c.pending == 0) {
      auto due = c.last_input + opt_.control_idle_timeout;
      if (now >= due)
        gone.emplace_back(fd, "idle for " + format_duration(opt_.control_idle_timeout));
      else
        take(due);
    }
  }
  for (auto& [fd, why] : gone) drop(fd, why);
  return next;
}

std::optional<DeferredReply> Agent::defer() {
  if (!in_dispatch_) return std::nullopt;
  deferred_ = true;
  return in_dispatch_;
}

void Agent::reply(const DeferredReply& to, Result<json> result) {
  auto it = clients_.find(to.fd);
  if (it == clients_.end() || it->second.serial != to.client) return;  // the client has gone
  Client& c = it->second;
  if (c.pending > 0) --c.pending;
  c.last_input = Clock::now();  // the idle timeout counts from the answer
  json resp =
      result ? json{{"id", to.id}, {"result", *result}} : json{{"id", to.id}, {"error", error_to_json(result.error())}};
  queue_reply(c, encode_reply(resp));
}

bool Agent::connected(const DeferredReply& to) const {
  auto it = clients_.find(to.fd);
  return it != clients_.end() && it->second.serial == to.client;
}

}  // namespace spark::daemon
