#include "daemon/agent.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/capability.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/fs.h"
#include "core/log.h"
#include "core/units.h"
#include "daemon/protocol.h"
#include "state/journal.h"

namespace spark::daemon {

using json = nlohmann::json;

Result<void> authorize_peer(const Peer& peer, const std::vector<gid_t>& groups, std::optional<gid_t> allowed_group) {
  if (peer.uid == 0) return {};
  if (allowed_group && (peer.gid == *allowed_group ||
                        std::find(groups.begin(), groups.end(), *allowed_group) != groups.end()))
    return {};
  return sys_error(EACCES, "uid " + std::to_string(peer.uid) + " may not use spark-tune: run as root or join group " +
                               k_group_name);
}

std::vector<std::string> agent_capabilities() {
  return {"cap_dac_override",  // sysfs/procfs/cgroup files, journal under /var/lib
          "cap_dac_read_search",  // open model files of any owner for fadvise/mincore
          "cap_fowner",        // MADV_PAGEOUT of file pages the agent does not own
          "cap_sys_ptrace",    // /proc/PID/maps, smaps, pidfd of other users' processes
          "cap_sys_nice",      // process_madvise
          "cap_sys_admin",     // some sysctls, cgroup setup
          "cap_sys_resource",  // sysctls that raise limits
          "cap_kill",          // the guard's actions on servers
          "cap_setuid",        // the guard restarts a server as the user it ran as
          "cap_setgid",
          "cap_chown",         // socket group at restart
          "cap_bpf",           // telemetry probes
          "cap_perfmon"};
}

Result<void> drop_capabilities(const std::vector<std::string>& keep) {
  std::vector<cap_value_t> values;
  for (const auto& name : keep) {
    cap_value_t v;
    if (cap_from_name(name.c_str(), &v) != 0) return input_error("unknown capability " + name);
    values.push_back(v);
  }
  // Only what the process has now can be kept (a container may have withheld some).
  if (cap_t now = cap_get_proc()) {
    values.erase(std::remove_if(values.begin(), values.end(),
                                [&](cap_value_t v) {
                                  cap_flag_value_t f = CAP_CLEAR;
                                  return cap_get_flag(now, v, CAP_PERMITTED, &f) != 0 || f != CAP_SET;
                                }),
                 values.end());
    cap_free(now);
  }
  // Bounding set first, while CAP_SETPCAP is still held; without it (systemd's
  // CapabilityBoundingSet already bounds the service) this is skipped.
  for (cap_value_t c = 0; c <= CAP_LAST_CAP; ++c) {
    if (std::find(values.begin(), values.end(), c) != values.end()) continue;
    if (::prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1 && ::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0) break;
  }
  cap_t caps = cap_init();
  if (!caps) return errno_error("cap_init");
  if (!values.empty() && (cap_set_flag(caps, CAP_PERMITTED, static_cast<int>(values.size()), values.data(), CAP_SET) != 0 ||
                          cap_set_flag(caps, CAP_EFFECTIVE, static_cast<int>(values.size()), values.data(), CAP_SET) != 0)) {
    cap_free(caps);
    return errno_error("cap_set_flag");
  }
  int rc = cap_set_proc(caps);
  int err = errno;
  cap_free(caps);
  if (rc != 0) return sys_error(err, "dropping capabilities");
  // Nothing gained through exec; the agent never runs a shell anyway.
  ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  return {};
}

Agent::Agent(HostPaths paths, AgentOptions options)
    : paths_(std::move(paths)), opt_(std::move(options)), actuator_(paths_), tuner_(paths_, actuator_) {}

Agent::~Agent() { cleanup(); }

void Agent::add_service(std::unique_ptr<Service> s, int order) { services_.push_back({order, std::move(s)}); }

Result<void> Agent::add_handler(const std::string& method, Handler handler) {
  if (handlers_.count(method)) return sys_error(EEXIST, "request handler " + method + " registered twice");
  handlers_[method] = std::move(handler);
  return {};
}

Result<void> Agent::write_pid_file() {
  SPARK_TRY_VOID(ensure_dir(paths_.run, 0755));
  fs::path p = pid_file(paths_);
  int fd = -1;
  for (int attempt = 0;; ++attempt) {
    fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return errno_error("opening " + p.string());
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      auto other = read_value(p);
      ::close(fd);
      return sys_error(EEXIST, "an agent is already running (pid " + other.value_or("?") + ")");
    }
    // The agent that held it may have removed the file between our open and its unlock: a lock
    // on an unlinked file guards nothing. Lock the file that is at the path.
    struct stat held {}, now {};
    if (::fstat(fd, &held) == 0 && ::stat(p.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
        held.st_dev == now.st_dev)
      break;
    ::close(fd);
    if (attempt >= 20) return sys_error(EBUSY, p.string() + " keeps being replaced");
  }
  std::string s = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, s.data(), s.size(), 0) != static_cast<ssize_t>(s.size())) {
    int err = errno;
    ::close(fd);
    return sys_error(err, "writing " + p.string());
  }
  pid_fd_ = fd;  // the lock lives as long as the agent
  return {};
}

Result<void> Agent::take_over_pid_file() {
  fs::path p = pid_file(paths_);
  auto text = read_value(p);
  pid_t other = text ? static_cast<pid_t>(std::atoi(text->c_str())) : 0;
  if (other <= 1 || other == ::getpid())
    return sys_error(EEXIST, "an agent is already running (its pid file " + p.string() + " is unreadable)");
  log_warning("a detached agent (pid " + std::to_string(other) +
              ") runs beside spark-tune.socket: asking it to hand over (its windows and guards are journaled "
              "and taken over here)");
  sd_notifyf(0, "STATUS=waiting for the detached agent (pid %d) to hand over", static_cast<int>(other));
  if (::kill(other, SIGUSR2) != 0 && errno != ESRCH)
    return sys_error(errno, "asking the detached agent (pid " + std::to_string(other) + ") to hand over");
  auto deadline = Clock::now() + k_handover_wait;
  for (;;) {
    auto r = write_pid_file();
    if (r) {
      log_info("took over from the detached agent (pid " + std::to_string(other) + ")");
      return {};
    }
    if (r.error().code().value() != EEXIST) return r;
    if (Clock::now() >= deadline)
      return sys_error(EEXIST, "the detached agent (pid " + std::to_string(other) + ") did not hand over in " +
                                   std::to_string(k_handover_wait.count()) + " s: stop it (kill " +
                                   std::to_string(other) + "), then run systemctl restart spark-tune.socket");
    ::usleep(50'000);
  }
}

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
    log_warning("systemd passed " + std::to_string(n) +
                " sockets, not one AF_UNIX stream socket: listening on " + p.string() + " instead");
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
      return sys_error(EADDRINUSE, p.string() + " already accepts connections (spark-tune.socket?): the agent is "
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
  if (::chown(p.c_str(), 0, gid) != 0 && ::geteuid() == 0) log_warning("chown " + p.string() + ": " + std::strerror(errno));
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
    std::optional<gid_t> allowed;
    if (group* g = ::getgrnam(opt_.group.c_str())) allowed = g->gr_gid;
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
      if (auto msg = refusal_log_.admit("refused a client: " + std::to_string(clients_.size()) +
                                            " control connections open (the limit)",
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
  }
}

void Agent::drop(int fd, const std::string& why) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  if (!why.empty())
    log_info("dropped a control connection (pid " + std::to_string(it->second.peer.pid) + "): " + why);
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
    auto line = next_frame(c.in, start, c.eof, overflow);
    if (!line) break;
    if (trim(*line).empty()) continue;
    auto resp = handle_frame(*line, [&](const json& request, const json& id) -> std::optional<json> {
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
    queue_reply(c, encode_reply(json{{"id", nullptr},
                                     {"error", error_to_json(input_error(
                                                   "request line over " + std::to_string(k_max_frame_bytes) +
                                                   " bytes (the limit): the connection is closed"))}}));
    return;
  }
  if (c.eof && c.in.empty()) c.closing = true;
  if (c.closing && c.out.empty()) drop(fd, "");
}

void Agent::queue_reply(Client& c, const std::string& line) {
  if (c.out.empty()) c.last_output = Clock::now();
  c.out += line;
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
      if (now >= due) gone.emplace_back(fd, "idle for " + format_duration(opt_.control_idle_timeout));
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

void Agent::cleanup() {
  for (auto& [fd, c] : clients_) ::close(fd);
  clients_.clear();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    if (own_socket_) {
      // Only the file this agent bound: spark-tune.socket may have bound the path since (it
      // replaces a file nobody serves for it), and its socket must outlive this agent.
      struct stat st {};
      fs::path p = socket_path(paths_);
      if (::lstat(p.c_str(), &st) == 0 && st.st_dev == socket_dev_ && st.st_ino == socket_ino_)
        ::unlink(p.c_str());
      else
        log_info("left " + p.string() + " in place: it is no longer this agent's socket");
    }
    listen_fd_ = -1;
  }
  if (pid_fd_ >= 0) {
    ::unlink(pid_file(paths_).c_str());
    ::close(pid_fd_);
    pid_fd_ = -1;
  }
  if (signal_fd_ >= 0) {
    ::close(signal_fd_);
    signal_fd_ = -1;
  }
  if (reserve_fd_ >= 0) {
    ::close(reserve_fd_);
    reserve_fd_ = -1;
  }
}

int Agent::run() {
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGUSR2);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal_fd_ = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);

  // Socket-activated (systemd passes the listening socket): the unit's agent. sd_listen_fds(0)
  // leaves the environment for open_socket().
  bool activated = sd_listen_fds(0) > 0;
  auto locked = write_pid_file();
  if (!locked && locked.error().code().value() == EEXIST && activated) locked = take_over_pid_file();
  if (!locked) {
    log_error(describe(locked.error()));
    return 1;
  }
  if (auto r = open_socket(); !r) {
    log_error(describe(r.error()));
    return 1;
  }
  for (auto& e : service_registry()) add_service(e.factory(), e.order);
  std::stable_sort(services_.begin(), services_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

  (void)add_handler("agent.ping", [this](const json&, const Peer&) -> Result<json> {
    json names = json::array();
    for (auto& [o, s] : services_) names.push_back(s->name());
    return json{{"pid", ::getpid()},
                {"version", SPARK_TUNE_VERSION},
                {"services", names},
                {"connections", clients_.size()}};
  });

  // Recovery before READY: the journal from an earlier boot, then each service's own state.
  if (auto r = tuner_.forget_earlier_boot(); !r) log_warning("journal: " + describe(r.error()));
  for (auto& [order, s] : services_) {
    if (auto r = s->on_start(*this); !r) {
      log_error("service " + s->name() + " failed to start: " + describe(r.error()));
      sd_notifyf(0, "STATUS=service %s failed to start", s->name().c_str());
      for (auto& [o2, s2] : services_) s2->on_stop();
      cleanup();
      return 1;
    }
  }
  if (opt_.drop_capabilities && ::geteuid() == 0) {
    if (auto r = drop_capabilities(agent_capabilities()); !r) log_warning("capabilities: " + describe(r.error()));
  }
  uint64_t watchdog_usec = 0;
  bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
  auto watchdog_period = std::chrono::microseconds(watchdog_usec / 2);
  auto next_watchdog = Clock::now();
  sd_notifyf(0, "READY=1\nSTATUS=serving %s\nMAINPID=%d", socket_path(paths_).c_str(), ::getpid());
  log_info("agent ready on " + socket_path(paths_).string() + " (pid " + std::to_string(::getpid()) + ")");

  bool stop = false;
  while (!stop) {
    auto now = Clock::now();
    if (watchdog && now >= next_watchdog) {
      sd_notify(0, "WATCHDOG=1");
      next_watchdog = now + watchdog_period;
    }
    std::optional<Clock::time_point> next;
    auto take = [&](Clock::time_point t) { next = next ? std::min(*next, t) : t; };
    if (watchdog) take(next_watchdog);
    if (auto t = expire_clients(now)) take(*t);
    if (accept_paused_until_ && now >= *accept_paused_until_) accept_paused_until_.reset();
    if (accept_paused_until_) take(*accept_paused_until_);
    // Out of descriptors a moment ago: the listener is not polled (it would spin) until then.
    std::vector<pollfd> fds{{accept_paused_until_ ? -1 : listen_fd_, POLLIN, 0}, {signal_fd_, POLLIN, 0}};
    for (auto& [fd, c] : clients_) {
      short events = 0;
      if (!c.closing && !c.eof && c.out.size() < k_reply_backpressure) events |= POLLIN;
      if (!c.out.empty()) events |= POLLOUT;
      fds.push_back({fd, events, 0});
    }
    size_t service_base = fds.size();
    std::vector<Service*> owner;
    for (auto& [o, s] : services_) {
      for (int fd : s->poll_fds()) {
        fds.push_back({fd, POLLIN | POLLPRI, 0});
        owner.push_back(s.get());
      }
      if (auto t = s->next_timer()) take(*t);
    }
    int timeout = -1;
    if (next) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*next - Clock::now()).count();
      timeout = static_cast<int>(std::clamp<int64_t>(ms, 0, 60'000));
    }
    int rc = ::poll(fds.data(), fds.size(), timeout);
    if (rc < 0 && errno != EINTR) {
      log_error(std::string("poll: ") + std::strerror(errno));
      break;
    }
    now = Clock::now();
    if (rc > 0) {
      if (fds[1].revents) {
        signalfd_siginfo si{};
        while (::read(signal_fd_, &si, sizeof si) == sizeof si)
          if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            stop = true;
          } else if (si.ssi_signo == SIGUSR2) {
            if (own_socket_) {
              log_info("handing over to the agent spark-tune.socket started (asked by pid " +
                       std::to_string(si.ssi_pid) + "): windows and guards stay journaled for it");
              handover_ = stop = true;
            } else {
              log_warning("SIGUSR2 from pid " + std::to_string(si.ssi_pid) +
                          " ignored: this agent is the socket unit's, it hands over to nobody");
            }
          }
      }
      // Clients first: a connection that has closed frees its slot before new ones are counted.
      for (size_t i = 2; i < service_base; ++i) {
        if (!fds[i].revents) continue;
        auto it = clients_.find(fds[i].fd);
        if (it == clients_.end()) continue;
        if (fds[i].revents & POLLOUT) {
          flush(it->second);
          it = clients_.find(fds[i].fd);
          if (it == clients_.end()) continue;
          // Replies drained below the bound: the requests that waited are handled now.
          if (!it->second.in.empty() && it->second.out.size() < k_reply_backpressure) process_input(it->second);
          it = clients_.find(fds[i].fd);
          if (it == clients_.end()) continue;
        }
        if (fds[i].revents & POLLNVAL) {
          drop(fds[i].fd, "");
        } else if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
          if (it->second.closing || it->second.eof || it->second.out.size() >= k_reply_backpressure) {
            if (fds[i].revents & (POLLHUP | POLLERR)) drop(fds[i].fd, "");  // gone: nothing more to send
          } else {
            serve(it->second);
          }
        }
      }
      if (fds[0].revents) accept_clients();
      for (size_t i = service_base; i < fds.size(); ++i)
        if (fds[i].revents) owner[i - service_base]->on_ready(fds[i].fd, now);
    }
    for (auto& [o, s] : services_) {
      auto t = s->next_timer();
      if (t && *t <= Clock::now()) s->on_timer(Clock::now());
    }
  }
  sd_notify(0, "STOPPING=1");
  log_info("agent stopping");
  for (auto it = services_.rbegin(); it != services_.rend(); ++it) {
    if (handover_)
      it->second->on_handover();
    else
      it->second->on_stop();
  }
  cleanup();
  return 0;
}

}  // namespace spark::daemon
