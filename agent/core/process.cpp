#include "core/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/child_nice.h"
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

// What the child was doing when it failed, sent back through the error pipe: an index here.
enum ChildStep : int { k_step_session, k_step_stdio, k_step_cwd, k_step_group, k_step_user, k_step_exec };
constexpr const char* k_step_names[] = {"starting its session",      "setting up its stdin, stdout and stderr",
                                        "changing to its directory", "setting its group",
                                        "setting its user",          "executing it"};

const char* step_name(int step) {
  return step >= 0 && step <= k_step_exec ? k_step_names[step] : k_step_names[k_step_exec];
}

// In the child: fd onto target, the close-on-exec flag cleared (dup2 onto itself keeps it).
bool child_dup(int fd, int target) {
  if (fd == target) return ::fcntl(fd, F_SETFD, 0) == 0;
  return ::dup2(fd, target) == target;
}

// The oom_score_adj a child is to be given, as the text written to /proc/self/oom_score_adj (made
// by the parent: the child allocates nothing); empty: leave what it inherits.
struct OomScoreAdj {
  char text[16] = {};
  size_t len = 0;
};

OomScoreAdj child_oom_score_adj(const SpawnOptions& o) {
  OomScoreAdj a;
  int value = 0;
  if (o.oom_score_adj) {
    value = std::clamp(*o.oom_score_adj, -1000, 1000);
  } else {
    // This process's own: inherited by the child unless it is written.
    Fd fd(::open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC));
    char buf[16] = {};
    ssize_t n = fd.valid() ? ::read(fd.get(), buf, sizeof buf - 1) : -1;
    if (n <= 0 || std::atoi(buf) >= 0) return a;
  }
  int n = std::snprintf(a.text, sizeof a.text, "%d", value);
  a.len = n > 0 ? static_cast<size_t>(n) : 0;
  return a;
}

// The child's side, between fork and exec: async-signal-safe calls only, nothing allocated.
[[noreturn]] void run_child(char* const* argv, char* const* envp, const SpawnOptions& o, const OomScoreAdj& adj,
                            int gate_rd, int gate_wr, int err_wr) {
  auto fail = [&](int step) {
    int e[2] = {step, errno};
    (void)!::write(err_wr, e, sizeof e);
    ::_exit(127);
  };
  if (gate_rd >= 0) {
    ::close(gate_wr);  // EOF at the gate when the parent is gone
    char go = 0;
    ssize_t g = 0;
    do g = ::read(gate_rd, &go, 1);
    while (g < 0 && errno == EINTR);
    if (g != 1) ::_exit(127);  // the parent did not release us (before_exec failed, or it died)
  }
  if (o.new_session && ::setsid() < 0) fail(k_step_session);
  child_default_nice();
  if (adj.len > 0) {
    // Its own value: a vfork child's write does not reach the parent sharing its memory (the
    // kernel spreads oom_score_adj over an mm's processes, vfork children excepted). Best effort,
    // and before setuid, which would take the right to lower it.
    int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)!::write(fd, adj.text, adj.len);
      ::close(fd);
    }
  }
  if (::sched_getscheduler(0) != SCHED_OTHER) {
    sched_param sp{};
    (void)::sched_setscheduler(0, SCHED_OTHER, &sp);
  }
  // Every signal to its default action (exec would keep an ignored one; a handler must not run in
  // a child sharing our memory), then none blocked.
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction sa {};
    if (::sigaction(sig, nullptr, &sa) == 0 && sa.sa_handler != SIG_DFL) ::signal(sig, SIG_DFL);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int in = o.stdin_fd;
  if (in < 0) in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (in < 0 || !child_dup(in, STDIN_FILENO)) fail(k_step_stdio);
  if (o.stdout_fd >= 0 && !child_dup(o.stdout_fd, STDOUT_FILENO)) fail(k_step_stdio);
  if (o.stderr_fd >= 0 && !child_dup(o.stderr_fd, STDERR_FILENO)) fail(k_step_stdio);
  if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) fail(k_step_cwd);
  if (o.gid && *o.gid != ::getgid() && (::setgroups(0, nullptr) != 0 || ::setgid(*o.gid) != 0)) fail(k_step_group);
  if (o.uid && *o.uid != ::getuid() && ::setuid(*o.uid) != 0) fail(k_step_user);
  if (o.search_path)
    ::execvpe(argv[0], argv, envp);
  else
    ::execve(argv[0], argv, envp);
  fail(k_step_exec);
  ::_exit(127);
}

// What clone() hands the child started without a gate (posix_spawn's way: CLONE_VM | CLONE_VFORK,
// the parent's thread waits until the child has exec'd or died, nothing copied).
struct ChildArgs {
  char* const* argv;
  char* const* envp;
  const SpawnOptions* options;
  const OomScoreAdj* adj;
  int err_wr;
};

int child_entry(void* p) {
  const auto* a = static_cast<const ChildArgs*>(p);
  run_child(a->argv, a->envp, *a->options, *a->adj, -1, -1, a->err_wr);
}

// The child's own stack for clone(): execvpe builds the path there.
constexpr size_t k_child_stack = 256 * 1024;

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

std::vector<std::string> environment_with(const std::vector<std::string>& extra,
                                          const std::vector<std::string>& replaced) {
  std::vector<std::string> env = extra;
  for (char** e = environ; e && *e; ++e) {
    bool skip = false;
    for (const auto& name : replaced)
      if (std::strncmp(*e, name.c_str(), name.size()) == 0 && (*e)[name.size()] == '=') skip = true;
    if (!skip) env.emplace_back(*e);
  }
  return env;
}

Result<pid_t> spawn_process(const std::vector<std::string>& args, const SpawnOptions& o) {
  std::string what =
      o.what.empty() ? (args.empty() ? std::string("starting a program") : "starting " + args[0]) : o.what;
  if (args.empty()) return input_error(what + ": no program");
  // Everything the child needs is built here: between fork and exec it allocates nothing.
  std::vector<std::string> arg_store = args;
  std::vector<char*> argv;
  for (auto& a : arg_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_store = o.env ? *o.env : environment_with({});
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  const OomScoreAdj adj = child_oom_score_adj(o);

  Pipe err, gate;
  SPARK_TRY_VOID(err.open());
  pid_t pid = -1;
  if (o.before_exec || o.uid || o.gid) {
    // A child that waits at a gate, or changes its credentials (glibc's setuid would talk to the
    // threads of a shared address space): a copy of this process, fork().
    if (o.before_exec) SPARK_TRY_VOID(gate.open());
    pid = ::fork();
    if (pid < 0) return errno_error(what + ": fork");
    if (pid == 0)
      run_child(argv.data(), envp.data(), o, adj, o.before_exec ? gate.end[0].get() : -1, gate.end[1].get(),
                err.end[1].get());
  } else {
    void* stack =
        ::mmap(nullptr, k_child_stack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return errno_error(what + ": a stack for the child");
    ChildArgs a{argv.data(), envp.data(), &o, &adj, err.end[1].get()};
    // Every signal blocked until the child has reset its handlers (posix_spawn does the same).
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = ::clone(child_entry, static_cast<char*>(stack) + k_child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    int e = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::munmap(stack, k_child_stack);
    if (pid < 0) return sys_error(e, what + ": clone");
  }
  err.end[1].reset();
  gate.end[0].reset();
  if (o.before_exec) {
    if (auto joined = o.before_exec(pid); !joined) {
      kill_and_reap(pid);
      return with_context(joined.error(), what);
    }
    if (::write(gate.end[1].get(), "g", 1) != 1) {
      Error e = errno_error(what + ": releasing it");
      kill_and_reap(pid);
      return e;
    }
    gate.end[1].reset();
  }
  // The error pipe closes at exec (close-on-exec); before that a failing child writes its step.
  int e[2] = {0, 0};
  ssize_t got = 0;
  do got = ::read(err.end[0].get(), e, sizeof e);
  while (got < 0 && errno == EINTR);
  if (got == sizeof e) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return sys_error(e[1], what + ": " + step_name(e[0]));
  }
  return pid;
}

Result<ProcessOutput> run_process(const std::vector<std::string>& args, const ProcessOptions& options) {
  if (args.empty()) return input_error("run_process: no program");
  Pipe out, err;
  SPARK_TRY_VOID(out.open());
  if (!options.merge_stderr) SPARK_TRY_VOID(err.open());
  SpawnOptions so;
  so.what = "running " + args[0];
  so.env = environment_with(options.extra_env);
  so.search_path = true;
  so.stdout_fd = out.end[1].get();
  so.stderr_fd = options.merge_stderr ? out.end[1].get() : err.end[1].get();
  auto spawned = spawn_process(args, so);
  out.end[1].reset();
  err.end[1].reset();
  if (!spawned) return spawned.error();
  pid_t pid = *spawned;

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
