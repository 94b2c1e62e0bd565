// apply + verify + revert of a profile (default dgx-spark) on the real kernel, N round trips.
// Prints median and p99 of the whole round trip and of each step. The journal lives in a temp
// state directory; revert restores every value each round, and a final check compares with the start.
//   sudo build/bench/apply_bench [PROFILE] [ROUNDS]
//
// Whole processes (issue 12): what a launch script pays. N reps of fork/exec + wait, medians of
// /bin/true, `spark-tune --version`, `spark-tune apply FOUR-KEYS.toml` + `spark-tune revert` (two
// processes), and with --tuned the same four keys through tuned (started without systemd, D-Bus
// or its socket: `tuned --no-dbus --no-socket --profile P` applies, SIGTERM reverts and exits),
// side by side in one run:
//   sudo build/bench/apply_bench --processes [--reps N] [--exe build/agent/spark-tune] [--tuned]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "core/log.h"
#include "profile/profile_ops.h"

using spark::tune::HostActuator, spark::tune::Tuner;

using spark::profile::apply_profile, spark::profile::resolve_named_profile, spark::profile::verify_profile;

using namespace spark;
using Clock = std::chrono::steady_clock;

namespace {

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void report(const char* what, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]; };
  std::printf("%-22s median %7.3f ms   p99 %7.3f ms   max %7.3f ms\n", what, pct(0.5), pct(0.99), v.back());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

extern "C" char** environ;

// CPU time (user + system) of the last run_process() child, ms: on a loaded host the wall time
// is mostly waiting for a CPU; the CPU time is the work the start itself does.
double last_cpu_ms = 0;

// fork/exec + wait of argv (stdout/stderr to /dev/null); the wall time in ms, -1 on failure.
double run_process(const std::vector<std::string>& args, const std::vector<std::string>& extra_env = {}) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  for (const auto& e : extra_env) env_store.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  auto t0 = Clock::now();
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int st = 0;
  struct rusage ru {};
  ::wait4(pid, &st, 0, &ru);
  auto t1 = Clock::now();
  last_cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
  return ms(t1 - t0);
}

std::string read_sysctl(const std::string& key) {
  std::string path = "/proc/sys/" + key;
  std::replace(path.begin() + 10, path.end(), '.', '/');
  std::ifstream in(path);
  std::string v;
  std::getline(in, v);
  return v;
}

// The four keys of the load recipe, values that differ from this host's.
std::map<std::string, std::string> four_keys() {
  return {{"vm.min_free_kbytes", read_sysctl("vm.min_free_kbytes") == "262144" ? "262400" : "262144"},
          {"vm.vfs_cache_pressure", read_sysctl("vm.vfs_cache_pressure") == "200" ? "201" : "200"},
          {"vm.dirty_ratio", read_sysctl("vm.dirty_ratio") == "5" ? "6" : "5"},
          {"vm.dirty_background_ratio", read_sysctl("vm.dirty_background_ratio") == "2" ? "3" : "2"}};
}

bool values_are(const std::map<std::string, std::string>& want) {
  for (const auto& [k, v] : want)
    if (read_sysctl(k) != v) return false;
  return true;
}

// tuned: start (applies the profile) until the four values are there, then SIGTERM (reverts)
// until it has exited. {apply ms, revert ms}, or -1s when tuned could not do it.
std::pair<double, double> tuned_round(const std::string& profile, const std::map<std::string, std::string>& want,
                                      const std::map<std::string, std::string>& before) {
  std::vector<std::string> args{"/usr/sbin/tuned", "--no-dbus", "--no-socket", "--profile", profile};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  auto t0 = Clock::now();
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return {-1, -1};
  auto deadline = t0 + std::chrono::seconds(30);
  while (!values_are(want) && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::microseconds(200));
  auto t1 = Clock::now();
  bool applied = values_are(want);
  ::kill(pid, SIGTERM);
  int st = 0;
  struct rusage ru {};
  ::wait4(pid, &st, 0, &ru);
  auto t2 = Clock::now();
  last_cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  if (!applied || !values_are(before)) return {-1, -1};
  return {ms(t1 - t0), ms(t2 - t1)};
}

int processes_mode(int argc, char** argv) {
  int reps = 21;
  std::string exe;
  bool tuned = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc)
      reps = std::atoi(argv[++i]);
    else if (a == "--exe" && i + 1 < argc)
      exe = argv[++i];
    else if (a == "--tuned")
      tuned = true;
    else {
      std::fprintf(stderr, "usage: apply_bench --processes [--reps N] [--exe PATH] [--tuned]\n");
      return 2;
    }
  }
  if (exe.empty())
    exe = (std::filesystem::canonical("/proc/self/exe").parent_path().parent_path() / "agent" / "spark-tune").string();
  auto dir = std::filesystem::temp_directory_path() / ("spark-tune-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::map<std::string, std::string> before, want = four_keys();
  for (const auto& [k, v] : want) before[k] = read_sysctl(k);
  fs::path profile = dir / "four-keys.toml";
  {
    std::ofstream out(profile);
    out << "[profile]\ndescription = \"apply_bench: the four keys of the load recipe\"\n[sysctl]\n";
    for (const auto& [k, v] : want) out << k << " = " << v << "\n";
  }
  std::vector<std::string> env{"SPARK_TUNE_STATE_DIR=" + (dir / "state").string(),
                               "SPARK_TUNE_RUN_DIR=" + (dir / "run").string()};
  if (tuned) {
    // tuned re-applies every sysctl.d file after its profile unless told not to: keys outside the
    // four would change and stay changed. Refuse instead.
    std::ifstream conf("/etc/tuned/tuned-main.conf");
    std::string line;
    bool reapply = true;
    while (std::getline(conf, line))
      if (line.rfind("reapply_sysctl", 0) == 0) reapply = line.find('0') == std::string::npos;
    if (reapply) {
      std::fprintf(stderr,
                   "--tuned: set reapply_sysctl = 0 in /etc/tuned/tuned-main.conf first (else tuned rewrites "
                   "every sysctl.d key and leaves them changed)\n");
      std::filesystem::remove_all(dir);
      return 2;
    }
  }
  std::string tuned_profile = "spark-tune-bench";
  fs::path tuned_dir = fs::path("/etc/tuned") / tuned_profile;
  if (tuned) {
    std::filesystem::create_directories(tuned_dir);
    std::ofstream out(tuned_dir / "tuned.conf");
    out << "[main]\nsummary=apply_bench: the four keys of the load recipe\n[sysctl]\n";
    for (const auto& [k, v] : want) out << k << "=" << v << "\n";
  }
  std::vector<double> t_true, t_version, t_help, t_apply, t_revert, t_pair, t_tuned_apply, t_tuned_revert, t_tuned_pair;
  std::vector<double> c_true, c_version, c_help, c_pair, c_tuned;  // CPU time
  bool ok = true;
  for (int i = 0; i < reps && ok; ++i) {
    t_true.push_back(run_process({"/bin/true"}));
    c_true.push_back(last_cpu_ms);
    t_version.push_back(run_process({exe, "--version"}));
    c_version.push_back(last_cpu_ms);
    t_help.push_back(run_process({exe, "apply", "--help"}));
    c_help.push_back(last_cpu_ms);
    double a = run_process({exe, "apply", profile.string()}, env);
    double a_cpu = last_cpu_ms;
    bool applied = values_are(want);
    double r = run_process({exe, "revert"}, env);
    c_pair.push_back(a_cpu + last_cpu_ms);
    bool reverted = values_are(before);
    if (a < 0 || r < 0 || !applied || !reverted) {
      std::fprintf(stderr, "round %d: spark-tune apply/revert failed (applied %d, reverted %d)\n", i, applied,
                   reverted);
      ok = false;
      break;
    }
    t_apply.push_back(a);
    t_revert.push_back(r);
    t_pair.push_back(a + r);
    if (tuned) {
      auto [ta, tr] = tuned_round(tuned_profile, want, before);
      if (ta < 0) {
        std::fprintf(stderr, "round %d: tuned did not apply and revert the four keys\n", i);
        ok = false;
        break;
      }
      c_tuned.push_back(last_cpu_ms);
      t_tuned_apply.push_back(ta);
      t_tuned_revert.push_back(tr);
      t_tuned_pair.push_back(ta + tr);
    }
  }
  // Whatever happened, the host as it was.
  (void)run_process({exe, "revert"}, env);
  if (tuned) std::filesystem::remove_all(tuned_dir);
  std::filesystem::remove_all(dir);
  bool same = values_are(before);
  std::printf("whole processes, %d reps, medians: wall (fork/exec + wait) and CPU (user + sys of the child)\n", reps);
  auto row = [](const char* what, const std::vector<double>& wall, const std::vector<double>& cpu) {
    if (cpu.empty())
      std::printf("%-44s wall %9.3f ms\n", what, median(wall));
    else
      std::printf("%-44s wall %9.3f ms   cpu %7.3f ms\n", what, median(wall), median(cpu));
  };
  row("/bin/true", t_true, c_true);
  row("spark-tune --version", t_version, c_version);
  std::printf("%-44s wall %+9.3f ms   cpu %+7.3f ms\n", "  --version over /bin/true",
              median(t_version) - median(t_true), median(c_version) - median(c_true));
  row("spark-tune apply --help", t_help, c_help);
  row("spark-tune apply four-keys.toml", t_apply, {});
  row("spark-tune revert", t_revert, {});
  row("spark-tune apply + revert (two processes)", t_pair, c_pair);
  if (tuned && !t_tuned_pair.empty()) {
    row("tuned start until the 4 keys are applied", t_tuned_apply, {});
    row("tuned SIGTERM until reverted and exited", t_tuned_revert, {});
    row("tuned apply + revert (one process)", t_tuned_pair, c_tuned);
    std::printf("%-44s wall %9.3fx     cpu %7.3fx\n", "spark-tune / tuned", median(t_pair) / median(t_tuned_pair),
                median(c_pair) / median(c_tuned));
  }
  std::printf("host values after the run identical to before: %s\n", same ? "yes" : "NO");
  return ok && same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--processes") {
    if (::geteuid() != 0) {
      std::fprintf(stderr, "apply_bench writes /proc/sys: run it as root\n");
      return 2;
    }
    return processes_mode(argc, argv);
  }
  std::string profile = argc > 1 ? argv[1] : "dgx-spark";
  int rounds = argc > 2 ? std::atoi(argv[2]) : 200;
  if (::geteuid() != 0) {
    std::fprintf(stderr, "apply_bench writes /proc/sys: run it as root\n");
    return 2;
  }
  set_log_level(LogLevel::warning);  // every change is logged; the bench measures the work, not the terminal
  HostPaths paths = HostPaths::system();
  paths.state = std::filesystem::temp_directory_path() / ("spark-tune-bench-" + std::to_string(::getpid()));
  HostActuator act(paths);
  Tuner tuner(paths, act);

  auto before = resolve_named_profile(paths, profile, act);
  if (!before) {
    std::fprintf(stderr, "%s\n", before.error().what());
    return 2;
  }
  std::vector<double> apply_ms, verify_ms, revert_ms, total_ms;
  for (int i = 0; i < rounds; ++i) {
    auto t0 = Clock::now();
    auto a = apply_profile(paths, act, {profile, false, false, false});
    auto t1 = Clock::now();
    auto v = verify_profile(paths, act, std::nullopt);
    auto t2 = Clock::now();
    auto r = tuner.revert_all();
    auto t3 = Clock::now();
    if (!a || !v || !r || v->drift()) {
      std::fprintf(stderr, "round %d failed: %s\n", i,
                   !a   ? a.error().what()
                   : !v ? v.error().what()
                   : !r ? r.error().what()
                        : "drift after apply");
      (void)tuner.revert_all();
      return 1;
    }
    apply_ms.push_back(ms(t1 - t0));
    verify_ms.push_back(ms(t2 - t1));
    revert_ms.push_back(ms(t3 - t2));
    total_ms.push_back(ms(t3 - t0));
  }
  std::filesystem::remove_all(paths.state);
  auto after = resolve_named_profile(paths, profile, act);
  bool same = after.ok();
  for (size_t i = 0; same && i < before->settings.size(); ++i)
    same = before->settings[i].current == after->settings[i].current;
  std::printf("profile %s, %zu keys, %d rounds (journal fsynced on every change)\n", profile.c_str(),
              before->settings.size(), rounds);
  report("apply", apply_ms);
  report("verify", verify_ms);
  report("revert", revert_ms);
  report("apply+verify+revert", total_ms);
  std::printf("host values after the run identical to before: %s\n", same ? "yes" : "NO");
  return same ? 0 : 1;
}
