#include "daemon/agent.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/fs.h"
#include "core/log.h"
#include "daemon/builtin_services.h"
#include "daemon/priority.h"
#include "daemon/privileges.h"
#include "daemon/protocol.h"
#include "state/journal.h"

namespace spark::daemon {

using json = nlohmann::json;

Agent::Agent(HostPaths paths, AgentOptions options)
    : paths_(std::move(paths)), opt_(std::move(options)), actuator_(paths_), tuner_(paths_, actuator_) {}

Agent::~Agent() { cleanup(); }

void Agent::add_service(std::unique_ptr<Service> s, int order) { services_.push_back({order, std::move(s)}); }

Result<void> Agent::add_handler(const std::string& method, Handler handler) {
  if (handlers_.count(method) || raw_handlers_.count(method))
    return sys_error(EEXIST, "request handler " + method + " registered twice");
  handlers_[method] = std::move(handler);
  return {};
}

Result<void> Agent::add_raw_handler(const std::string& method, RawHandler handler) {
  if (handlers_.count(method) || raw_handlers_.count(method))
    return sys_error(EEXIST, "request handler " + method + " registered twice");
  raw_handlers_[method] = std::move(handler);
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
    struct stat held {
    }, now{};
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
  for (auto& e : builtin_services()) add_service(e.factory(), e.order);
  std::stable_sort(services_.begin(), services_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

  (void)add_handler("agent.ping", [this](const json&, const Peer&) -> Result<json> {
    json names = json::array();
    for (auto& [o, s] : services_) names.push_back(s->name());
    return json{
        {"pid", ::getpid()}, {"version", SPARK_TUNE_VERSION}, {"services", names}, {"connections", clients_.size()}};
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
  // The unit's Nice= for the agent's whole session group, not only against its own threads.
  if (auto n = nice_session_group(paths_); !n)
    log_warning("priority: " + describe(n.error()) + ": the agent's Nice= weighs only within its session");
  else if (*n)
    log_info("the agent's session group runs at nice " + std::to_string(**n) + ", as the agent does");
  if (opt_.drop_capabilities && ::geteuid() == 0) {
    if (auto r = drop_capabilities(agent_capabilities()); !r) log_warning("capabilities: " + describe(r.error()));
  }
  uint64_t watchdog_usec = 0;
  bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
  auto watchdog_period = std::chrono::microseconds(watchdog_usec / 2);
  auto next_watchdog = Clock::now();
  sd_notifyf(0, "READY=1\nSTATUS=serving %s\nMAINPID=%d", socket_path(paths_).c_str(), ::getpid());
  log_info("agent ready on " + socket_path(paths_).string() + " (pid " + std::to_string(::getpid()) + ")");

  tally_ = LoopTally::from_env(paths_);
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
    if (!dear_clients_.empty()) take(now);  // dear requests past the last round's budget: no sleep
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
      for (pollfd p : s->poll_fds()) {  // each fd with the events its part asks for (core/loop.h)
        p.revents = 0;
        fds.push_back(p);
        owner.push_back(s.get());
      }
      if (auto t = s->next_timer()) take(*t);
    }
    int timeout = -1;
    if (next) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*next - Clock::now()).count();
      timeout = static_cast<int>(std::clamp<int64_t>(ms, 0, 60'000));
    }
    if (tally_) tally_->before_poll();
    int rc = ::poll(fds.data(), fds.size(), timeout);
    if (tally_) tally_->after_poll();
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
          {
            TallySpan span(tally_.get(), "send");
            flush(it->second);
          }
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
      if (fds[0].revents) {
        accepted_.clear();
        {
          TallySpan span(tally_.get(), "accept");
          accept_clients();
        }
        // A new client's request is usually there already (it connects and sends at once): it is
        // answered in this round, not the next (each request on a new connection waited a round).
        for (auto [fd, serial] : accepted_) {
          auto it = clients_.find(fd);
          if (it != clients_.end() && it->second.serial == serial) serve(it->second);
        }
      }
      // The dear requests of this round, after every cheap one (a window's begin or end behind a
      // ping held the ping for the begin's time: issue 13, the soak).
      serve_dear();
      for (size_t i = service_base; i < fds.size(); ++i)
        if (fds[i].revents) {
          Service* s = owner[i - service_base];
          TallySpan span(tally_.get(), tally_ ? s->name() + ".ready" : std::string());
          s->on_ready(fds[i].fd, now);
        }
    } else if (rc == 0) {
      serve_dear();  // those left by the last round's budget
    }
    for (auto& [o, s] : services_) {
      auto t = s->next_timer();
      if (t && *t <= Clock::now()) {
        TallySpan span(tally_.get(), tally_ ? s->name() + ".timer" : std::string());
        s->on_timer(Clock::now());
      }
    }
    if (tally_) tally_->round_end();
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
