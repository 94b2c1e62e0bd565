#include "profile/overrides.h"

#include <algorithm>
#include <map>
#include <set>

#include "core/fs.h"

namespace spark::profile {

namespace {

// "kernel.x = 1", "kernel/x=1", "-kernel.x = 1" (ignore errors) -> key with dots.
bool parse_assignment(const std::string& raw, std::string& key, std::string& value) {
  std::string line = trim(raw);
  if (line.empty() || line[0] == '#' || line[0] == ';' || line[0] == '[') return false;
  if (line[0] == '-') line = line.substr(1);
  auto eq = line.find('=');
  if (eq == std::string::npos) return false;
  key = trim(line.substr(0, eq));
  value = trim(line.substr(eq + 1));
  std::replace(key.begin(), key.end(), '/', '.');
  return !key.empty();
}

void scan_file(const fs::path& file, const std::string& name, const std::set<std::string>& keys,
               std::vector<SysctlSource>& out) {
  auto text = read_file(file);
  if (!text) return;
  int n = 0;
  for (const auto& line : split_lines(*text)) {
    ++n;
    std::string k, v;
    if (parse_assignment(line, k, v) && keys.count(k))
      out.push_back({k, v, file.string() + ":" + std::to_string(n), name});
  }
}

// tuned: active_profile names one or more profiles; each tuned.conf may include= another.
void scan_tuned(const HostPaths& paths, const std::set<std::string>& keys, std::vector<SysctlSource>& out) {
  auto active = read_value(paths.host_root / "etc/tuned/active_profile");
  if (!active || active->empty()) return;
  std::vector<std::string> queue;
  for (size_t s = 0; s <= active->size();) {
    size_t e = active->find(' ', s);
    if (e == std::string::npos) e = active->size();
    if (e > s) queue.push_back(active->substr(s, e - s));
    s = e + 1;
  }
  std::set<std::string> seen;
  while (!queue.empty()) {
    std::string name = queue.back();
    queue.pop_back();
    if (!seen.insert(name).second || name.find('/') != std::string::npos) continue;
    for (const char* dir : {"etc/tuned", "usr/lib/tuned"}) {
      fs::path conf = paths.host_root / dir / name / "tuned.conf";
      auto text = read_file(conf);
      if (!text) continue;
      std::string section;
      for (const auto& raw : split_lines(*text)) {
        std::string line = trim(raw);
        if (line.size() > 2 && line.front() == '[' && line.back() == ']') {
          section = line.substr(1, line.size() - 2);
          continue;
        }
        std::string k, v;
        if (!parse_assignment(line, k, v)) continue;
        if (section == "main" && k == "include") queue.push_back(v);
        if (section == "sysctl" && keys.count(k))
          out.push_back({k, v, "tuned profile '" + name + "' (" + conf.string() + ")", ""});
      }
      break;
    }
  }
}

}  // namespace

std::vector<SysctlSource> sysctl_sources(const HostPaths& paths, const std::vector<std::string>& key_list) {
  std::set<std::string> keys(key_list.begin(), key_list.end());
  // systemd-sysctl: one file per basename, the first directory in this list wins; then by basename.
  std::map<std::string, fs::path> files;
  for (const char* dir :
       {"etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d"}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(paths.host_root / dir, ec)) {
      std::string name = e.path().filename().string();
      if (e.path().extension() == ".conf" && !files.count(name)) files[name] = e.path();
    }
  }
  std::vector<SysctlSource> out;
  for (const auto& [name, path] : files) scan_file(path, name, keys, out);
  // /etc/sysctl.conf is applied last by `sysctl --system` (Debian also links it as 99-sysctl.conf).
  if (!files.count("99-sysctl.conf")) scan_file(paths.host_root / "etc/sysctl.conf", "~sysctl.conf", keys, out);
  scan_tuned(paths, keys, out);
  return out;
}

std::string persist_dropin_text(const std::string& profile,
                                const std::vector<std::pair<std::string, std::string>>& values) {
  std::string text = "# Written by `spark-tune apply " + profile + " --persist`; `spark-tune revert` removes it.\n";
  for (const auto& [k, v] : values) text += k + " = " + v + "\n";
  return text;
}

}  // namespace spark::profile
