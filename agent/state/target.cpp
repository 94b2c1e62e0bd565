#include "state/target.h"

#include <cctype>

namespace spark::state {

const char* target_kind_name(TargetKind k) {
  switch (k) {
    case TargetKind::sysctl:
      return "sysctl";
    case TargetKind::sysfs:
      return "sysfs";
    case TargetKind::cgroup:
      return "cgroup";
    case TargetKind::file:
      return "file";
    case TargetKind::dir:
      return "dir";
  }
  return "?";
}

Result<TargetKind> parse_target_kind(const std::string& s) {
  for (auto k : {TargetKind::sysctl, TargetKind::sysfs, TargetKind::cgroup, TargetKind::file, TargetKind::dir})
    if (s == target_kind_name(k)) return k;
  return input_error("unknown target kind '" + s + "'");
}

std::string Target::display() const {
  if (kind == TargetKind::sysctl) return name;
  return std::string(target_kind_name(kind)) + ":" + name;
}

Result<void> validate_sysctl_name(const std::string& name) {
  if (name.empty()) return input_error("empty sysctl key");
  if (name.size() > 128) return input_error("sysctl key '" + name.substr(0, 32) + "...' is too long");
  size_t part_len = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '.') {
      if (part_len == 0)
        return input_error("sysctl key '" + name + "' has an empty part: write it like vm.dirty_ratio");
      part_len = 0;
      continue;
    }
    bool okc = std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_' ||
               c == '-';
    if (!okc)
      return input_error("sysctl key '" + name +
                         "' may only hold a-z, 0-9, '_', '-' and dots (a key is a name, never a path)");
    ++part_len;
  }
  if (part_len == 0) return input_error("sysctl key '" + name + "' ends with a dot");
  return {};
}

Result<void> validate_relative_name(const std::string& name) {
  if (name.empty() || name.front() == '/') return input_error("'" + name + "' must be a relative name");
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string::npos) slash = name.size();
    std::string part = name.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..")
      return input_error("'" + name + "' has an empty, '.' or '..' part");
    start = slash + 1;
  }
  return {};
}

}  // namespace spark::state
