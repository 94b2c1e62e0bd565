#include "core/systemd_unit.h"

#include <unistd.h>

#include <array>

#include "core/fs.h"
#include "core/process.h"

namespace spark {

namespace {

// Every unit type systemd knows: a name ending in one of these has a type already.
constexpr std::array<const char*, 11> k_unit_types = {".service", ".socket", ".target", ".mount", ".scope",    ".timer",
                                                      ".path",    ".device", ".swap",   ".slice", ".automount"};

}  // namespace

Result<std::string> normalize_unit_name(const std::string& name, const std::vector<std::string>& types,
                                        const std::string& who) {
  std::string wanted;
  for (const auto& t : types) wanted += (wanted.empty() ? "" : " and ") + t;
  if (name.empty() || name.size() > 255 ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.@-\\") !=
          std::string::npos)
    return input_error(who + ": '" + name + "' is not a systemd unit name (llama.service, user.slice)");
  for (const char* type : k_unit_types) {
    if (!name.ends_with(type) || name.size() == std::string(type).size()) continue;
    for (const auto& t : types)
      if (t == type) return name;
    return input_error(who + ": '" + name + "': only " + wanted + " units take this drop-in");
  }
  return name + ".service";
}

Result<void> verify_dropin(const std::string& unit, const std::string& unit_text, const std::string& dropin_name,
                           const std::string& dropin_text) {
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
  SPARK_TRY_VOID(atomic_write(dir / unit, unit_text));
  SPARK_TRY_VOID(ensure_dir(dir / (unit + ".d")));
  fs::path dropin = dir / (unit + ".d") / dropin_name;
  SPARK_TRY_VOID(atomic_write(dropin, dropin_text));
  // Our directory first, then systemd's defaults (the trailing colon).
  ProcessOptions opts;
  opts.extra_env = {"SYSTEMD_UNIT_PATH=" + dir.string() + ":", "SYSTEMD_LOG_COLOR=0"};
  opts.merge_stderr = true;
  auto r = run_process({"systemd-analyze", "verify", "--man=no", (dir / unit).string()}, opts);
  if (!r) {
    if (r.error().code().value() == ENOENT)
      return sys_error(ENOENT, "systemd-analyze is not installed: cannot validate the drop-in for " + unit);
    return with_context(r.error(), "validating the drop-in for " + unit);
  }
  std::string complaints;
  for (const auto& line : split_lines(r->out))
    if (line.find(dropin_name) != std::string::npos || line.find(unit + ":") == 0)
      complaints += (complaints.empty() ? "" : "; ") + line;
  if (r->exit_code != 0 || !complaints.empty())
    return sys_error(EINVAL, "systemd-analyze verify rejects the drop-in for " + unit + ": " +
                                 (complaints.empty() ? trim(r->out) : complaints));
  return {};
}

}  // namespace spark
