#include "support/run_spark_tune.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace spark::test {

ProcessResult run_spark_tune(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  std::vector<std::string> argv = {SPARK_TUNE_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions opts;
  opts.extra_env = env;
  auto r = run_process(argv, opts);
  if (!r) {
    ProcessResult failed;
    failed.err = r.error().what();
    return failed;
  }
  return std::move(*r);
}

Spawned spawn_tool(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  int o[2], e[2];
  if (::pipe2(o, O_CLOEXEC) != 0) return {};
  if (::pipe2(e, O_CLOEXEC) != 0) {
    ::close(o[0]);
    ::close(o[1]);
    return {};
  }
  std::vector<std::string> argv = {SPARK_TUNE_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions so;
  so.env = environment_with(env);
  so.stdout_fd = o[1];
  so.stderr_fd = e[1];
  auto pid = spawn_process(argv, so);
  ::close(o[1]);
  ::close(e[1]);
  if (!pid) {
    ::close(o[0]);
    ::close(e[0]);
    return {};
  }
  return {*pid, o[0], e[0]};
}

Finished finish(Spawned s, std::chrono::seconds limit) {
  Finished f;
  auto deadline = std::chrono::steady_clock::now() + limit;
  bool out_open = true, err_open = true;
  char buf[4096];
  while ((out_open || err_open) && std::chrono::steady_clock::now() < deadline) {
    pollfd p[2] = {{out_open ? s.out : -1, POLLIN, 0}, {err_open ? s.err : -1, POLLIN, 0}};
    if (::poll(p, 2, 200) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (!p[i].revents) continue;
      ssize_t n = ::read(p[i].fd, buf, sizeof buf);
      if (n <= 0) {
        (i == 0 ? out_open : err_open) = false;
        continue;
      }
      (i == 0 ? f.out : f.err).append(buf, static_cast<size_t>(n));
    }
  }
  if (out_open || err_open) ::kill(s.pid, SIGKILL);
  ::close(s.out);
  ::close(s.err);
  ::waitpid(s.pid, &f.status, 0);
  return f;
}

pid_t fork_paused_child() {
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  return child;
}

}  // namespace spark::test
