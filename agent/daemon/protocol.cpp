#include "daemon/protocol.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <thread>

#include "core/fd.h"
#include "core/fs.h"
#include "core/units.h"
#include "daemon/socket_unit.h"

namespace spark::daemon {

using json = nlohmann::json;

json error_to_json(const Error& e) {
  std::string what = e.what();
  std::string reason = e.code().message();
  // what() is "context: reason": send the whole text and the errno.
  return {{"message", what}, {"code", e.code().value()}, {"reason", reason}};
}

Error error_from_json(const json& j) {
  int code = j.value("code", EIO);
  std::string message = j.value("message", std::string("agent error"));
  std::string reason = std::generic_category().message(code);
  // Strip the reason the constructor will append again.
  if (message.size() > reason.size() + 2 && message.compare(message.size() - reason.size(), reason.size(), reason) == 0)
    message = message.substr(0, message.size() - reason.size() - 2);
  return sys_error(code, message);
}

namespace {

Result<int> connect_socket(const HostPaths& paths, std::chrono::milliseconds timeout) {
  fs::path p = socket_path(paths);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (p.native().size() >= sizeof(addr.sun_path)) return sys_error(ENAMETOOLONG, "socket path " + p.string());
  std::strncpy(addr.sun_path, p.c_str(), sizeof(addr.sun_path) - 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_error("socket");
  // A listener whose queue is full makes connect() wait; bound that wait (it ends in EAGAIN).
  auto ms = std::max<int64_t>(timeout.count(), 1);
  timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EAGAIN) return sys_error(ETIMEDOUT, "connecting to the agent at " + p.string() + " (its queue is full)");
    return sys_error(err, "connecting to the agent at " + p.string());
  }
  return fd;
}

}  // namespace

Result<json> call(const HostPaths& paths, const std::string& method, const json& params,
                  std::chrono::milliseconds timeout) {
  SPARK_TRY(int fd, connect_socket(paths, timeout));
  Fd closer(fd);
  std::string line = json{{"id", 1}, {"method", method}, {"params", params}}.dump() + "\n";
  // An agent that refuses the peer answers and closes at once, possibly before our request is
  // written: then the send fails (EPIPE) but the refusal is still queued for us to read.
  std::optional<Error> send_error;
  for (size_t off = 0; off < line.size();) {
    ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EPIPE && errno != ECONNRESET) return errno_error("sending to the agent");
      send_error = errno_error("sending to the agent");
      break;
    }
    off += static_cast<size_t>(n);
  }
  std::string in;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (in.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return sys_error(ETIMEDOUT, "waiting for the agent's answer to " + method);
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return errno_error("waiting for the agent");
    if (rc == 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 && send_error) return *send_error;
    if (n < 0) return errno_error("reading from the agent");
    if (n == 0) return sys_error(ECONNRESET, "the agent closed the connection during " + method);
    in.append(buf, static_cast<size_t>(n));
  }
  json resp;
  try {
    resp = json::parse(in.substr(0, in.find('\n')));
  } catch (const json::exception& e) {
    return sys_error(EPROTO, std::string("the agent's answer is not JSON: ") + e.what());
  }
  if (resp.contains("error")) return error_from_json(resp["error"]);
  return resp.value("result", json());
}

Result<PendingCall> PendingCall::send(const HostPaths& paths, const std::string& method, const json& params,
                                      std::chrono::milliseconds connect_timeout) {
  SPARK_TRY(int fd, connect_socket(paths, connect_timeout));
  PendingCall call(fd, method);
  std::string line = json{{"id", 1}, {"method", method}, {"params", params}}.dump() + "\n";
  for (size_t off = 0; off < line.size();) {
    ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      // A refusal may be queued for us to read (see call()): poll() finds it.
      if (errno == EPIPE || errno == ECONNRESET) break;
      return errno_error("sending " + method + " to the agent");
    }
    off += static_cast<size_t>(n);
  }
  return call;
}

std::optional<Result<json>> PendingCall::poll(std::chrono::milliseconds wait) {
  if (!fd_.valid()) return Result<json>(sys_error(EBADF, method_ + ": already answered"));
  auto finish = [this](Result<json> r) -> std::optional<Result<json>> {
    fd_.reset();
    return r;
  };
  auto deadline = std::chrono::steady_clock::now() + wait;
  char buf[65536];
  while (in_.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd_.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (rc < 0 && errno == EINTR) return std::nullopt;
    if (rc < 0) return finish(errno_error("waiting for the agent"));
    if (rc == 0) return std::nullopt;
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return std::nullopt;
    if (n < 0) return finish(errno_error("reading from the agent"));
    if (n == 0) return finish(sys_error(ECONNRESET, "the agent closed the connection during " + method_));
    in_.append(buf, static_cast<size_t>(n));
  }
  json resp;
  try {
    resp = json::parse(in_.substr(0, in_.find('\n')));
  } catch (const json::exception& e) {
    return finish(sys_error(EPROTO, std::string("the agent's answer is not JSON: ") + e.what()));
  }
  if (resp.contains("error")) return finish(error_from_json(resp["error"]));
  return finish(resp.value("result", json()));
}

Result<void> ensure_agent(const HostPaths& paths, const std::vector<std::string>& extra_args,
                          std::chrono::milliseconds wait, std::chrono::milliseconds activation_wait,
                          const std::function<Result<void>(const std::string& unit)>& start_unit) {
  using Clock = std::chrono::steady_clock;
  auto activation_deadline = Clock::now() + activation_wait;
  bool managed = socket_unit_manages(paths);
  bool unit_started = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(activation_deadline - Clock::now());
    auto r = call(paths, "agent.ping", json::object(), std::max(left, std::chrono::milliseconds(1)));
    if (r) return {};
    int code = r.error().code().value();
    if ((code == ENOENT || code == ECONNREFUSED) && managed) {
      // The unit owns the socket: start it (once), then wait for it to listen. Never an agent
      // beside it: that one would lose its socket to the unit, and the unit its service to it.
      if (!unit_started) {
        auto starter = start_unit ? start_unit : system_bus_starter();
        if (auto s = starter(k_socket_unit); !s)
          return with_context(s.error(), std::string("no agent listens on ") + socket_path(paths).string() + " and " +
                                             k_socket_unit +
                                             " (installed here) could not be started for you: run "
                                             "`systemctl start " +
                                             k_socket_unit + "` (as root), then try again");
        unit_started = true;
      }
      if (Clock::now() >= activation_deadline)
        return with_context(r.error(), std::string("started ") + k_socket_unit + " but nothing listens on " +
                                           socket_path(paths).string() + " yet; see `systemctl status " +
                                           k_socket_unit + "`");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (code == ENOENT || code == ECONNREFUSED) break;  // nobody listens: start one below
    // The listener dropped the queued connection (an activated agent that died while starting,
    // the activator stopped): look again, it may listen anew or be gone.
    if ((code == ECONNRESET || code == EPIPE) && Clock::now() < activation_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    // Something listens but does not answer: systemd still starting the service, or an agent
    // that hangs. Starting another agent would take the socket path from under it.
    if (code == ETIMEDOUT)
      return with_context(r.error(), "the socket " + socket_path(paths).string() +
                                         " accepts connections but no agent answered in " +
                                         format_duration(activation_wait) +
                                         "; under systemd see `systemctl status spark-tune.service` and "
                                         "`journalctl -u spark-tune`");
    return r.error();
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink(paths.proc / "self/exe", ec);
  if (ec) return sys_error(ec.value(), "finding the spark-tune executable to start the agent");
  std::vector<std::string> args{exe.string()};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  args.push_back("agent");
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("starting the agent");
  if (pid == 0) {
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    // Close everything else the CLI had open.
    for (int fd = 3; fd < 1024; ++fd) ::close(fd);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::waitpid(pid, nullptr, 0);
  auto deadline = std::chrono::steady_clock::now() + wait;
  Error last = sys_error(ETIMEDOUT, "the agent did not answer");
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = call(paths, "agent.ping", json::object(), std::chrono::milliseconds(2000));
    if (r) return {};
    last = r.error();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return with_context(last, "started the agent but it does not answer (see the journal: journalctl -t spark-tune)");
}

}  // namespace spark::daemon
