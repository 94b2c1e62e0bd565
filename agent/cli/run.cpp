// spark-tune run [window options] -- CMD ARGS...: the command runs inside a load window. The window
// begins before the command starts (readahead is fixed per file at open), ends at readiness
// (--until-port), TTL or the command's exit; the command keeps running after the window ends.
// The command's exit status is ours; a signal that killed it kills us the same way; signals sent
// to us (not the terminal's, which reach the command directly) are passed on to it.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "cli/registry.h"
#include "cli/window_options.h"
#include "daemon/protocol.h"

using spark::window::spec_to_json;

namespace {

using json = nlohmann::json;

volatile sig_atomic_t g_child = 0;
pid_t g_last_child = 0;

void forward(int sig, siginfo_t* info, void*) {
  // Signals from the terminal reach the command itself (same process group): do not send twice.
  if (info && info->si_code == SI_KERNEL) return;
  if (g_child > 0) ::kill(g_child, sig);
}

constexpr int k_forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

// Runs the command once in a window; returns its wait status, or -1 with ctx.exit_code set.
int run_once(spark::cli::Context& ctx, spark::cli::RunOptions& opts, bool begin_window, std::string& window_id) {
  using namespace spark;
  int gate[2];
  if (::pipe2(gate, O_CLOEXEC) != 0) {
    ctx.exit_code = cli::report_error(ctx, std::string("pipe: ") + std::strerror(errno));
    return -1;
  }
  pid_t child = ::fork();
  if (child < 0) {
    ctx.exit_code = cli::report_error(ctx, std::string("fork: ") + std::strerror(errno));
    return -1;
  }
  if (child == 0) {
    ::close(gate[1]);
    char go = 0;
    ssize_t n;
    do n = ::read(gate[0], &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1 || go != 'g') ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<char*> argv;
    for (auto& a : opts.command) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "spark-tune run: %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(errno == ENOENT ? 127 : 126);
  }
  ::close(gate[0]);
  g_child = child;
  auto fail = [&](const std::string& message) {
    ::kill(child, SIGKILL);
    ::close(gate[1]);
    ::waitpid(child, nullptr, 0);
    ctx.exit_code = cli::report_error(ctx, message);
    return -1;
  };
  if (begin_window) {
    auto spec = cli::to_spec(opts.window);
    if (!spec) return fail(describe(spec.error()));
    spec->pid = child;
    if (spec->label.empty()) {
      for (const auto& a : opts.command) spec->label += (spec->label.empty() ? "" : " ") + a;
      if (spec->label.size() > 60) spec->label = spec->label.substr(0, 57) + "...";
    }
    auto r = cli::agent_call(ctx, "window.begin", spec_to_json(*spec));
    if (!r) return fail(describe(r.error()));
    window_id = r->value("id", "");
    if (r->contains("overlay_reserve"))
      std::cerr << "spark-tune: " << (*r)["overlay_reserve"].value("text", "") << std::endl;
  }
  for (auto& ext : cli::run_extensions())
    if (ext.before_exec)
      if (auto r = ext.before_exec(ctx, opts, child); !r) return fail(ext.name + ": " + describe(r.error()));
  if (::write(gate[1], "g", 1) != 1) return fail("releasing the command failed");
  ::close(gate[1]);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0)
    if (errno != EINTR) break;
  g_child = 0;
  g_last_child = child;
  return status;
}

void setup(CLI::App& app, spark::cli::Context& ctx) {
  using namespace spark;
  static cli::RunOptions opts;
  auto* run = app.add_subcommand("run", "run a command inside a load window: spark-tune run [options] -- CMD ARGS...");
  cli::add_window_options(*run, opts.window, false);
  run->add_option("command", opts.command, "the command and its arguments (after --)")->required();
  run->positionals_at_end();
  for (auto& ext : cli::run_extensions())
    if (ext.add_options) ext.add_options(*run, opts);
  run->callback([&ctx] {
    if (auto spec = cli::to_spec(opts.window); !spec) {
      ctx.exit_code = cli::report_error(ctx, describe(spec.error()));
      return;
    }
    struct sigaction sa {};
    sa.sa_sigaction = forward;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int s : k_forwarded) ::sigaction(s, &sa, nullptr);

    std::string window_id;
    bool first = true;
    int status = 0;
    for (;;) {
      status = run_once(ctx, opts, first, window_id);
      if (status < 0) return;
      bool again = false;
      for (auto& ext : cli::run_extensions())
        if (ext.after_exit && ext.after_exit(ctx, opts, g_last_child, status)) again = true;
      first = false;
      if (!again) break;
    }
    // The agent ends the window when the command exits (pidfd); ending it here too makes the host
    // restored before we return. A window already ended (TTL, readiness) is fine.
    if (!window_id.empty()) {
      auto r = daemon::call(ctx.paths, "window.end", json{{"id", window_id}});
      if (!r && r.error().code().value() != ENOENT)
        std::fprintf(stderr, "spark-tune run: ending window %s: %s\n", window_id.c_str(), r.error().what());
    }
    for (int s : k_forwarded) ::signal(s, SIG_DFL);
    if (WIFSIGNALED(status)) {
      int sig = WTERMSIG(status);
      ::signal(sig, SIG_DFL);
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, sig);
      ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
      std::fflush(nullptr);
      ::raise(sig);
      ctx.exit_code = 128 + sig;
      return;
    }
    ctx.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  });
}

const spark::cli::Verb k_verb{"run", 41, setup};

}  // namespace
