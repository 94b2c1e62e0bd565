#include "core/process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "core/fd.h"

extern char** environ;

namespace spark {

namespace {

// Both ends of a pipe, each closed when destroyed.
struct Pipe {
  Fd end[2];
  Result<void> open() {
    int fd[2];
    if (::pipe2(fd, O_CLOEXEC) != 0) return errno_error("pipe");
    end[0].reset(fd[0]);
    end[1].reset(fd[1]);
    return {};
  }
};

}  // namespace

Result<ProcessOutput> run_process(const std::vector<std::string>& args, const ProcessOptions& options) {
  if (args.empty()) return input_error("run_process: no program");
  std::vector<std::string> env_s = options.extra_env;
  for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
  std::vector<char*> envp, argv;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args_copy = args;
  for (auto& a : args_copy) argv.push_back(a.data());
  argv.push_back(nullptr);

  Pipe out, err;
  SPARK_TRY_VOID(out.open());
  if (!options.merge_stderr) SPARK_TRY_VOID(err.open());
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out.end[1].get(), 1);
  posix_spawn_file_actions_adddup2(&fa, options.merge_stderr ? out.end[1].get() : err.end[1].get(), 2);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  out.end[1].reset();
  err.end[1].reset();
  if (rc != 0) return sys_error(rc, "running " + args[0]);

  ProcessOutput r;
  // Both pipes drained together: a child that fills one while we block on the other never stalls.
  pollfd fds[2] = {{out.end[0].get(), POLLIN, 0}, {err.end[0].get(), POLLIN, 0}};
  char buf[4096];
  while (fds[0].fd >= 0 || fds[1].fd >= 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0)
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR)
        fds[i].fd = -1;  // poll ignores negative fds; Pipe closes them
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

}  // namespace spark
