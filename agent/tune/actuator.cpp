#include "tune/actuator.h"

#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"

using spark::state::Target, spark::state::TargetKind, spark::state::validate_relative_name,
    spark::state::validate_sysctl_name;

namespace spark::tune {

namespace {

bool inside(const fs::path& base, const fs::path& p) {
  std::error_code ec;
  fs::path b = fs::weakly_canonical(base, ec);
  if (ec) b = base;
  fs::path c = fs::weakly_canonical(p, ec);
  if (ec) return false;
  auto bi = b.begin(), ci = c.begin();
  for (; bi != b.end(); ++bi, ++ci)
    if (ci == c.end() || *bi != *ci) return false;
  return true;
}

}  // namespace

Result<fs::path> resolve_target(const HostPaths& paths, const Target& t) {
  fs::path base, p;
  switch (t.kind) {
    case TargetKind::sysctl: {
      SPARK_TRY_VOID(validate_sysctl_name(t.name));
      std::string rel = t.name;
      for (auto& c : rel)
        if (c == '.') c = '/';
      base = paths.proc / "sys";
      p = base / rel;
      break;
    }
    case TargetKind::sysfs:
      SPARK_TRY_VOID(validate_relative_name(t.name));
      base = paths.sys;
      p = base / t.name;
      break;
    case TargetKind::cgroup:
      SPARK_TRY_VOID(validate_relative_name(t.name));
      base = paths.cgroup;
      p = base / t.name;
      break;
    case TargetKind::file:
    case TargetKind::dir: {
      fs::path abs(t.name);
      if (!abs.is_absolute() || t.name.find("/../") != std::string::npos || abs.filename() == "..")
        return input_error("'" + t.name + "' must be an absolute path without '..'");
      return abs;
    }
  }
  if (!inside(base, p))
    return sys_error(EPERM, t.display() + " resolves outside " + base.string() + " (symlinked escape refused)");
  return p;
}

std::string normalize_value(const std::string& raw) {
  std::string v = normalize_ws(raw);
  auto open = v.find('[');
  auto close = v.find(']', open == std::string::npos ? 0 : open);
  if (open != std::string::npos && close != std::string::npos && close > open)
    return v.substr(open + 1, close - open - 1);
  return v;
}

Result<std::optional<std::string>> HostActuator::read(const Target& t) {
  SPARK_TRY(fs::path p, resolve_target(paths_, t));
  if (t.kind == TargetKind::dir) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) return std::optional<std::string>();
      return errno_error("checking " + p.string());
    }
    return std::optional<std::string>(std::string());
  }
  auto text = read_file(p);
  if (!text) {
    if (t.kind == TargetKind::file && text.error().code().value() == ENOENT) return std::optional<std::string>();
    if (text.error().code().value() == ENOENT)
      return sys_error(ENOENT, t.display() + " does not exist on this kernel (" + p.string() + ")");
    return with_context(text.error(), "reading " + t.display());
  }
  if (t.kind == TargetKind::file) return std::optional<std::string>(*text);
  return std::optional<std::string>(normalize_value(*text));
}

Result<void> HostActuator::write(const Target& t, const std::optional<std::string>& value) {
  SPARK_TRY(fs::path p, resolve_target(paths_, t));
  switch (t.kind) {
    case TargetKind::file:
      if (!value) return remove_file(p);
      SPARK_TRY_VOID(ensure_dir(p.parent_path(), 0755));
      return atomic_write(p, *value, 0644);
    case TargetKind::dir:
      if (!value) {
        if (::rmdir(p.c_str()) != 0 && errno != ENOENT) return errno_error("removing " + p.string());
        return {};
      }
      if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return errno_error("creating " + p.string());
      return {};
    default: {
      if (!value) return input_error("cannot remove " + t.display());
      auto r = write_value(p, *value);
      if (!r) return sys_error(r.error().code().value(), "writing " + t.display() + " = " + *value);
      return {};
    }
  }
}

Result<void> HostActuator::trigger(const Target& t, const std::string& value) {
  if (t.kind == TargetKind::file || t.kind == TargetKind::dir)
    return input_error("a trigger writes a kernel or cgroup file, not " + t.display());
  SPARK_TRY(fs::path p, resolve_target(paths_, t));
  auto r = write_value(p, value);
  if (!r) return sys_error(r.error().code().value(), "writing " + t.display() + " = " + value);
  return {};
}

std::string DryRunActuator::Planned::text() const {
  return target.display() + (value ? " = " + *value : std::string(" (remove)")) + (trigger ? " (trigger)" : "");
}

Result<void> DryRunActuator::write(const Target& t, const std::optional<std::string>& value) {
  planned_.push_back({t, value, false});
  return {};
}

Result<void> DryRunActuator::trigger(const Target& t, const std::string& value) {
  planned_.push_back({t, value, true});
  return {};
}

}  // namespace spark::tune
