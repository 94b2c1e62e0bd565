#include "guard/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/child_nice.h"
#include "core/fs.h"

using spark::tune::Actuator;

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
  int rc = 0;
  {
    DefaultNiceWhileSpawning at_default;  // the hook at nice 0, not at the agent's (core/child_nice.h)
    rc = ::posix_spawn(&pid, args[0].c_str(), &fa, &attr, av.data(), envp.data());
  }
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

Result<pid_t> spawn_in_box(const ServerLaunch& launch, const CgroupBox& box, Actuator& act) {
  return spawn_gated(launch, [&](pid_t pid) { return box.attach(act, pid); });
}

Result<pid_t> spawn_gated(const ServerLaunch& launch, const JoinBox& join) {
  std::vector<std::string> args = launch.argv;
  std::vector<char*> av;
  for (auto& s : args) av.push_back(s.data());
  av.push_back(nullptr);
  int errpipe[2];
  if (::pipe2(errpipe, O_CLOEXEC) != 0) return errno_error("pipe");
  Fd er(errpipe[0]), ew(errpipe[1]);
  // The child waits at this gate until the parent has moved it into the box (a cgroup.procs trigger
  // through the actuator), so everything it maps after exec is charged to the box.
  int gate[2];
  if (::pipe2(gate, O_CLOEXEC) != 0) return errno_error("pipe");
  Fd gate_rd(gate[0]), gate_wr(gate[1]);
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fork");
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    auto fail = [&](int step) {
      int e[2] = {step, errno};
      (void)!::write(ew.get(), e, sizeof e);
      ::_exit(127);
    };
    ::close(gate_wr.get());  // EOF at the gate when the parent is gone
    char go = 0;
    ssize_t g;
    do g = ::read(gate_rd.get(), &go, 1);
    while (g < 0 && errno == EINTR);
    if (g != 1) ::_exit(127);  // the parent could not move us into the box
    ::setsid();
    child_default_nice();  // the server at nice 0, not at the agent's (core/child_nice.h)
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
  gate_rd.reset();
  if (auto a = join(pid); !a) {
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
    return with_context(a.error(), std::string("restarting ") + args[0] + ": joining the guard's cgroup");
  }
  if (::write(gate_wr.get(), "g", 1) != 1) {
    Error e = errno_error("releasing " + args[0]);
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
    return e;
  }
  gate_wr.reset();
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
