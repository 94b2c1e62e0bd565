#include "guard/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/fs.h"
#include "core/process.h"

using spark::tune::Actuator;

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
  SpawnOptions so;
  so.what = "starting hook " + (argv.empty() ? std::string() : argv[0]);
  so.env = environment_with({"SPARK_TUNE_EVENT=" + event_json}, {"SPARK_TUNE_EVENT"});
  so.stdin_fd = rd.get();
  so.new_session = true;
  auto started = std::chrono::steady_clock::now();
  SPARK_TRY(pid_t pid, spawn_process(argv, so));  // at nice 0, not at the agent's (core/process.h)
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
  // The child waits until the parent has moved it into the box (a cgroup.procs trigger through the
  // actuator), so everything it maps after exec is charged to the box.
  SpawnOptions so;
  so.what = "restarting " + (launch.argv.empty() ? std::string() : launch.argv[0]);
  so.new_session = true;
  so.cwd = launch.cwd;
  so.uid = launch.uid;
  so.gid = launch.gid;
  so.oom_score_adj = launch.oom_score_adj;
  so.before_exec = [&](pid_t pid) -> Result<void> {
    if (auto a = join(pid); !a) return with_context(a.error(), "joining the guard's cgroup");
    return {};
  };
  return spawn_process(launch.argv, so);  // at nice 0, not at the agent's (core/process.h)
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
