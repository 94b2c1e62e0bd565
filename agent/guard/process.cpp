#include "guard/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/fs.h"

extern char** environ;

namespace spark::guard {

Result<std::string> resolve_executable(const std::string& argv0) {
  if (argv0.empty()) return input_error("empty command");
  auto check = [](const std::string& p) -> bool {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (argv0.find('/') != std::string::npos) {
    if (check(argv0)) return argv0;
    return input_error("'" + argv0 + "' is not an executable file (commands run without a shell: give a program path)");
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  std::istringstream in(path);
  std::string dir;
  while (std::getline(in, dir, ':')) {
    if (dir.empty()) continue;
    std::string p = dir + "/" + argv0;
    if (check(p)) return p;
  }
  return input_error("'" + argv0 + "' is not an executable in PATH (commands run without a shell)");
}

std::vector<std::string> split_command(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

Result<Fd> open_pidfd(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    if (errno == ESRCH) return sys_error(ESRCH, "process " + std::to_string(pid) + " does not exist");
    return errno_error("pidfd_open " + std::to_string(pid));
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return Fd(fd);
}

bool process_alive(const HostPaths& paths, pid_t pid) {
  auto st = read_file(paths.proc / std::to_string(pid) / "stat");
  if (!st) return false;
  auto rp = st->rfind(')');
  if (rp == std::string::npos || rp + 2 >= st->size()) return false;
  char state = (*st)[rp + 2];
  return state != 'Z' && state != 'X';
}

std::optional<int> reap_child(pid_t pid) {
  int status = 0;
  pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == pid) return status;
  return std::nullopt;
}

Result<void> write_without_sigpipe(int fd, const std::string& data) {
  // A hook that exits without reading its stdin must not take us down with SIGPIPE: block it
  // for this thread around the write and swallow the one it raised.
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t n = ::write(fd, data.data(), data.size());
  int err = errno;
  if (n < 0 && err == EPIPE) {
    timespec zero{0, 0};
    ::sigtimedwait(&pipe_set, nullptr, &zero);
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (n < 0) return sys_error(err, "writing to a pipe");
  return {};
}

Result<SpawnedHook> spawn_hook(const std::vector<std::string>& argv, const std::string& event_json) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return errno_error("pipe for the hook's stdin");
  Fd rd(pipefd[0]), wr(pipefd[1]);

  std::vector<std::string> env_store;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "SPARK_TUNE_EVENT=", 17) != 0) env_store.emplace_back(*e);
  env_store.push_back("SPARK_TUNE_EVENT=" + event_json);
  std::vector<char*> envp;
  for (auto& s : env_store) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> av;
  for (auto& s : args) av.push_back(s.data());
  av.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, rd.get(), STDIN_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  pid_t pid = -1;
  auto started = std::chrono::steady_clock::now();
  int rc = ::posix_spawn(&pid, args[0].c_str(), &fa, &attr, av.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return sys_error(rc, "starting hook " + args[0]);
  rd.reset();
  // The event is small (well under the pipe buffer): one write, then EOF for the hook.
  ::fcntl(wr.get(), F_SETFL, O_NONBLOCK);
  std::string line = event_json + "\n";
  (void)write_without_sigpipe(wr.get(), line);
  return SpawnedHook{pid, started};
}

Result<pid_t> spawn_in_box(const ServerLaunch& launch, const CgroupBox& box) {
  fs::path procs = box.file("cgroup.procs");
  Fd pfd(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
  if (!pfd.valid()) return errno_error("opening " + procs.string());
  std::vector<std::string> args = launch.argv;
  std::vector<char*> av;
  for (auto& s : args) av.push_back(s.data());
  av.push_back(nullptr);
  int errpipe[2];
  if (::pipe2(errpipe, O_CLOEXEC) != 0) return errno_error("pipe");
  Fd er(errpipe[0]), ew(errpipe[1]);
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fork");
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    auto fail = [&](int step) {
      int e[2] = {step, errno};
      (void)!::write(ew.get(), e, sizeof e);
      ::_exit(127);
    };
    char buf[32];
    int n = std::snprintf(buf, sizeof buf, "%d", static_cast<int>(::getpid()));
    if (::write(pfd.get(), buf, static_cast<size_t>(n)) < 0) fail(1);
    ::setsid();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    if (!launch.cwd.empty() && ::chdir(launch.cwd.c_str()) != 0) fail(2);
    if (launch.gid != ::getgid() && (::setgroups(0, nullptr) != 0 || ::setgid(launch.gid) != 0)) fail(3);
    if (launch.uid != ::getuid() && ::setuid(launch.uid) != 0) fail(4);
    ::execv(av[0], av.data());
    fail(5);
  }
  ew.reset();
  int e[2] = {0, 0};
  ssize_t got;
  do got = ::read(er.get(), e, sizeof e);
  while (got < 0 && errno == EINTR);
  if (got == sizeof e) {
    int status;
    ::waitpid(pid, &status, 0);
    static const char* steps[] = {"",
                                  "joining the guard's cgroup",
                                  "changing to its directory",
                                  "setting its group",
                                  "setting its user",
                                  "executing it"};
    return sys_error(e[1], std::string("restarting ") + args[0] + ": " + steps[e[0] < 6 ? e[0] : 0]);
  }
  return pid;
}

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

uint64_t process_rss(const HostPaths& paths, pid_t pid) {
  auto t = read_file(paths.proc / std::to_string(pid) / "statm");
  if (!t) return 0;
  std::istringstream in(*t);
  uint64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::string process_comm(const HostPaths& paths, pid_t pid) {
  auto t = read_value(paths.proc / std::to_string(pid) / "comm");
  return t ? *t : std::string();
}

}  // namespace spark::guard
