#include "guard/unit.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "core/fs.h"
#include "core/units.h"
#include "guard/budget.h"
#include "guard/cgroup.h"
#include "guard/process.h"
#include "state/journal.h"

namespace spark::guard {

namespace {

constexpr const char* k_dropin_name = "50-spark-tune-guard.conf";

std::string owner_of(const std::string& unit) {
  return "guard-unit:" + unit;
}

fs::path host_root(const HostPaths& paths) {
  // systemd_d is <root>/etc/systemd/system on the host and in fixture trees alike.
  return paths.systemd_d.parent_path().parent_path().parent_path();
}

// Runs argv with stdout+stderr captured; returns (exit status, output).
Result<std::pair<int, std::string>> run_capture(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return errno_error("pipe");
  std::vector<std::string> args = argv;
  std::vector<char*> av;
  for (auto& s : args) av.push_back(s.data());
  av.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fork");
  if (pid == 0) {
    ::dup2(pipefd[1], STDOUT_FILENO);
    ::dup2(pipefd[1], STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::execv(av[0], av.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return std::make_pair(status, out);
}

}  // namespace

Result<std::string> normalize_unit_name(const std::string& name) {
  if (name.empty() || name.size() > 255) return input_error("--unit: give a unit name like llama.service");
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == ':' || c == '_' || c == '.' || c == '-' || c == '@' ||
          c == '\\'))
      return input_error("--unit '" + name + "': not a systemd unit name");
  if (name.find('.') == std::string::npos) return name + ".service";
  if (name.size() < 8 || name.compare(name.size() - 8, 8, ".service") != 0)
    return input_error("--unit '" + name + "': only .service units take a guard drop-in");
  return name;
}

Result<fs::path> find_unit_file(const HostPaths& paths, const std::string& unit) {
  fs::path root = host_root(paths);
  for (const char* dir : {"etc/systemd/system", "run/systemd/system", "usr/local/lib/systemd/system",
                          "usr/lib/systemd/system", "lib/systemd/system"}) {
    fs::path p = root / dir / unit;
    std::error_code ec;
    if (fs::exists(p, ec)) return p;
  }
  // Template instances: llama@8080.service -> llama@.service.
  auto at = unit.find('@');
  if (at != std::string::npos && unit.compare(at + 1, std::string::npos, ".service") != 0)
    return find_unit_file(paths, unit.substr(0, at + 1) + ".service");
  return sys_error(ENOENT, "unit " + unit + " does not exist (no unit file under " +
                               (root / "etc/systemd/system").string() + ", /run, /usr/lib or /lib systemd/system)");
}

Result<std::string> render_dropin(const GuardOptions& o, uint64_t budget, uint64_t footprint) {
  uint64_t max = o.memory_max ? *o.memory_max : footprint + budget;
  uint64_t high = o.memory_high ? *o.memory_high : footprint + budget / 10 * 9;
  if (high > max) high = max;
  std::string s = "# Written by spark-tune guard --unit; remove with: spark-tune guard --unit UNIT --undo\n";
  if (o.restart) {
    s += "[Unit]\n";
    s += "StartLimitIntervalSec=" + std::to_string(std::max<int64_t>(1, o.restart_window.count() / 1000)) + "\n";
    s += "StartLimitBurst=" + std::to_string(o.restart_max) + "\n";
  }
  s += "[Service]\n";
  s += "MemoryAccounting=yes\n";
  s += "MemoryHigh=" + std::to_string(page_round(high)) + "\n";
  s += "MemoryMax=" + std::to_string(page_round(max)) + "\n";
  s += "OOMPolicy=kill\n";
  if (o.restart) {
    s += "Restart=on-failure\n";
    s += "RestartSec=" + std::to_string(o.restart_backoff.count()) + "ms\n";
  }
  return s;
}

Result<void> verify_dropin(const fs::path& unit_file, const std::string& unit, const std::string& content) {
  auto exe = resolve_executable("systemd-analyze");
  if (!exe) return sys_error(ENOENT, "systemd-analyze is not installed: cannot validate the drop-in");
  char tmpl[] = "/tmp/spark-tune-unit-XXXXXX";
  if (!::mkdtemp(tmpl)) return errno_error("mkdtemp");
  fs::path dir = tmpl;
  auto cleanup = [&] {
    std::error_code ec;
    fs::remove_all(dir, ec);
  };
  auto text = read_file(unit_file);
  if (!text) {
    cleanup();
    return text.error();
  }
  fs::create_directories(dir / (unit + ".d"));
  auto w1 = atomic_write(dir / unit, *text);
  auto w2 = atomic_write(dir / (unit + ".d") / k_dropin_name, content);
  if (!w1 || !w2) {
    cleanup();
    return !w1 ? w1.error() : w2.error();
  }
  auto r = run_capture({*exe, "verify", "--man=no", (dir / unit).string()});
  cleanup();
  if (!r) return r.error();
  auto [status, out] = *r;
  std::string ours;
  for (const auto& line : split_lines(out))
    if (line.find(k_dropin_name) != std::string::npos) ours += (ours.empty() ? "" : "; ") + line;
  if (!ours.empty()) return input_error("systemd-analyze verify rejects the guard drop-in: " + ours);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return input_error("systemd-analyze verify fails for " + unit + " with the drop-in: " + trim(out));
  return {};
}

Result<UnitDropin> write_unit_dropin(const HostPaths& paths, Tuner& tuner, const std::string& name,
                                     const GuardOptions& o) {
  SPARK_TRY(std::string unit, normalize_unit_name(name));
  SPARK_TRY(BudgetSpec spec, parse_budget(o.budget));
  SPARK_TRY(HostMemory host, read_host_memory(paths));
  uint64_t budget = resolve_budget(spec, host);
  if (o.restart_max < 1) return input_error("--restart-max must be at least 1");
  if (!o.on_oom.empty() || !o.until_port.empty())
    return input_error("--on-oom and --until-port need the guard supervisor: use --pid with the service's main pid");
  SPARK_TRY(fs::path unit_file, find_unit_file(paths, unit));
  // What the service uses now, where it runs (system.slice): the budget is growth on top of it.
  uint64_t footprint = 0;
  if (auto h = find_memory_hierarchy(paths); h.ok()) {
    CgroupBox box(paths, *h, "/system.slice/" + unit);
    if (box.exists())
      if (auto s = box.stats(); s.ok()) footprint = s->usage;
  }
  uint64_t max = o.memory_max ? *o.memory_max : footprint + budget;
  if (max > host.total)
    return input_error("MemoryMax " + format_size(max) + " is above the host's RAM (" + format_size(host.total) +
                       "): give a smaller --budget or --memory-max");
  if (o.memory_max && footprint && *o.memory_max < footprint && !o.force)
    return input_error("--memory-max " + format_size(*o.memory_max) + " is below what " + unit + " uses now (" +
                       format_size(footprint) + "): raise it or pass --force");
  SPARK_TRY(std::string content, render_dropin(o, budget, footprint));
  SPARK_TRY_VOID(verify_dropin(unit_file, unit, content));
  fs::path path = paths.systemd_d / (unit + ".d") / k_dropin_name;
  ApplyOptions ao;
  ao.owner_state = {{"kind", "guard_unit"}, {"unit", unit}, {"path", path.string()}};
  auto r = tuner.apply(owner_of(unit), {{{TargetKind::file, path.string()}, content, "guard drop-in for " + unit}}, ao);
  if (!r) return with_context(r.error(), "writing the drop-in for " + unit);
  return UnitDropin{unit, path.string(), content};
}

Result<void> undo_unit_dropin(const HostPaths& paths, Tuner& tuner, const std::string& name) {
  SPARK_TRY(std::string unit, normalize_unit_name(name));
  SPARK_TRY(JournalData d, read_journal(paths));
  if (!d.owners.contains(owner_of(unit))) return input_error("no guard drop-in for " + unit + " in the journal");
  auto r = tuner.release(owner_of(unit));
  if (!r) return with_context(r.error(), "removing the drop-in of " + unit);
  // The directory the drop-in needed goes too when nothing else is in it.
  std::error_code ec;
  fs::remove(paths.systemd_d / (unit + ".d"), ec);
  return {};
}

}  // namespace spark::guard
