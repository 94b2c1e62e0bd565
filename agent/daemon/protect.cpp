#include "daemon/protect.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "core/fs.h"
#include "core/log.h"
#include "core/units.h"

extern char** environ;

namespace spark {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string systemd_size(uint64_t bytes) {
  if (bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + "G";
  if (bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + "M";
  return std::to_string(bytes);
}

// fork/exec with an argv; stdout and stderr together.
Result<std::pair<int, std::string>> run_capture(const std::vector<std::string>& args,
                                                const std::vector<std::string>& extra_env) {
  std::vector<std::string> env_s = extra_env;
  for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
  std::vector<char*> envp, argv;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args_copy = args;
  for (auto& a : args_copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return sys_error(rc, "running " + args[0]);
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out);
}

}  // namespace

Result<std::string> protect_unit_name(const std::string& arg) {
  if (arg.empty() || arg.size() > 255 ||
      arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.@-\\") !=
          std::string::npos)
    return input_error("'" + arg + "' is not a unit name (sshd.service, user.slice)");
  if (ends_with(arg, ".service") || ends_with(arg, ".slice")) return arg;
  for (const char* other :
       {".socket", ".target", ".mount", ".scope", ".timer", ".path", ".device", ".swap", ".automount"})
    if (ends_with(arg, other)) return input_error("'" + arg + "': protect handles .service and .slice units");
  return arg + ".service";
}

fs::path protect_dropin_path(const HostPaths& paths, const std::string& unit) {
  return paths.systemd_d / (unit + ".d") / k_protect_dropin;
}

std::string protect_dropin_text(const std::string& unit, const ProtectSpec& spec, bool created_dir) {
  bool slice = ends_with(unit, ".slice");
  std::string t = std::string(k_protect_marker) + "; spark-tune protect --undo " + unit + " removes it.\n";
  if (created_dir) t += std::string(k_protect_created_dir) + "\n";
  t += slice ? "[Slice]\n" : "[Service]\n";
  t += "MemoryMin=" + systemd_size(spec.memory_min) + "\n";
  t += "MemoryLow=" + systemd_size(spec.memory_low) + "\n";
  if (!slice) t += "OOMScoreAdjust=" + std::to_string(spec.oom_score_adjust) + "\n";
  t += "ManagedOOMPreference=avoid\n";
  return t;
}

Result<void> verify_dropin(const std::string& unit, const std::string& text) {
  std::string tmpl = (fs::temp_directory_path() / "spark-tune-verify-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) return errno_error("creating a directory to verify " + unit);
  fs::path dir = tmpl;
  struct Cleanup {
    fs::path d;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  } cleanup{dir};
  bool slice = ends_with(unit, ".slice");
  std::string stub = "[Unit]\nDescription=spark-tune protect check\n";
  if (!slice) stub += "[Service]\nExecStart=/bin/true\n";
  SPARK_TRY_VOID(atomic_write(dir / unit, stub));
  SPARK_TRY_VOID(ensure_dir(dir / (unit + ".d")));
  fs::path dropin = dir / (unit + ".d") / k_protect_dropin;
  SPARK_TRY_VOID(atomic_write(dropin, text));
  // Our directory first, then systemd's defaults (the trailing colon).
  auto r = run_capture({"systemd-analyze", "verify", (dir / unit).string()},
                       {"SYSTEMD_UNIT_PATH=" + dir.string() + ":", "SYSTEMD_LOG_COLOR=0"});
  if (!r) return with_context(r.error(), "validating the drop-in for " + unit + " (is systemd installed?)");
  std::string complaints;
  for (const auto& line : split_lines(r->second))
    if (line.find(dropin.string()) != std::string::npos || line.find(unit + ":") == 0)
      complaints += (complaints.empty() ? "" : "; ") + line;
  if (r->first != 0 || !complaints.empty())
    return sys_error(EINVAL, "systemd-analyze verify rejects the drop-in for " + unit + ": " +
                                 (complaints.empty() ? trim(r->second) : complaints));
  return {};
}

Result<std::vector<ProtectChange>> protect_units(const HostPaths& paths, const std::vector<std::string>& units,
                                                 const ProtectSpec& spec) {
  struct Plan {
    std::string unit;
    fs::path path;
    std::string text;
    std::optional<std::string> old;
    bool created_dir;
  };
  std::vector<Plan> plans;
  for (const auto& arg : units) {
    SPARK_TRY(std::string unit, protect_unit_name(arg));
    fs::path path = protect_dropin_path(paths, unit);
    std::optional<std::string> old;
    if (auto o = read_file(path)) old = *o;
    // Keep the created-directory mark of an earlier run, so --undo stays exact.
    bool created = !fs::exists(path.parent_path()) || (old && old->find(k_protect_created_dir) != std::string::npos);
    if (old && old->rfind(k_protect_marker, 0) != 0)
      return input_error(path.string() + " exists and was not written by spark-tune; move it away first");
    plans.push_back({unit, path, protect_dropin_text(unit, spec, created), old, created});
  }
  for (const auto& p : plans) SPARK_TRY_VOID(verify_dropin(p.unit, p.text));
  std::vector<ProtectChange> done;
  for (size_t i = 0; i < plans.size(); ++i) {
    const auto& p = plans[i];
    bool changed = !p.old || *p.old != p.text;
    Result<void> w = ensure_dir(p.path.parent_path());
    if (w && changed) w = atomic_write(p.path, p.text);
    if (!w) {
      for (size_t j = 0; j < i; ++j) {  // restore what this call wrote
        const auto& q = plans[j];
        if (q.old)
          (void)atomic_write(q.path, *q.old);
        else
          (void)remove_file(q.path);
        if (q.created_dir && !q.old) {
          std::error_code ec;
          fs::remove(q.path.parent_path(), ec);
        }
      }
      return with_context(w.error(), "protecting " + p.unit);
    }
    if (changed)
      log_change(p.path.string(), p.old ? "previous drop-in" : "", "memory floor and OOM protection", "protect",
                 "keep " + p.unit + " usable under memory pressure");
    done.push_back({p.unit, p.path, changed});
  }
  return done;
}

Result<std::vector<ProtectChange>> unprotect_units(const HostPaths& paths, const std::vector<std::string>& units) {
  std::vector<std::pair<std::string, fs::path>> targets;
  for (const auto& arg : units) {
    SPARK_TRY(std::string unit, protect_unit_name(arg));
    fs::path path = protect_dropin_path(paths, unit);
    if (auto text = read_file(path); text && text->rfind(k_protect_marker, 0) != 0)
      return input_error(path.string() + " was not written by spark-tune; not removing it");
    targets.emplace_back(unit, path);
  }
  std::vector<ProtectChange> out;
  for (const auto& [unit, path] : targets) {
    auto text = read_file(path);
    if (!text) {
      out.push_back({unit, path, false});
      continue;
    }
    SPARK_TRY_VOID(remove_file(path));
    if (text->find(k_protect_created_dir) != std::string::npos) {
      std::error_code ec;
      fs::remove(path.parent_path(), ec);  // only when empty
    }
    log_change(path.string(), "memory floor and OOM protection", "", "protect --undo", "asked to remove");
    out.push_back({unit, path, true});
  }
  return out;
}

}  // namespace spark
