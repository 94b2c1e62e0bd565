#include <algorithm>
#include <map>
#include <set>

#include "core/fs.h"
#include "doctor/doctor.h"

namespace spark::doctor {

fs::path host_root(const HostPaths& paths) {
  return paths.sysctl_d.parent_path().parent_path();
}

Result<std::string> sysctl_value(const HostPaths& paths, const std::string& key) {
  std::string rel = key;
  std::replace(rel.begin(), rel.end(), '.', '/');
  SPARK_TRY(std::string v, read_value(paths.proc_sys(rel)));
  return normalize_ws(v);
}

namespace {

bool parse_assignment(const std::string& raw, std::string& key, std::string& value) {
  std::string line = trim(raw);
  if (line.empty() || line[0] == '#' || line[0] == ';' || line[0] == '[') return false;
  if (line[0] == '-') line = line.substr(1);
  auto eq = line.find('=');
  if (eq == std::string::npos) return false;
  key = trim(line.substr(0, eq));
  value = normalize_ws(line.substr(eq + 1));
  std::replace(key.begin(), key.end(), '/', '.');
  return !key.empty();
}

void scan(const fs::path& file, const std::string& name, const std::set<std::string>& keys,
          std::vector<SysctlAssignment>& out) {
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

}  // namespace

std::vector<SysctlAssignment> sysctl_assignments(const HostPaths& paths, const std::vector<std::string>& key_list) {
  std::set<std::string> keys(key_list.begin(), key_list.end());
  const fs::path root = host_root(paths);
  // systemd-sysctl: one file per basename (the first directory listed wins), applied by basename.
  std::map<std::string, fs::path> by_name;
  std::vector<fs::path> dirs = {paths.sysctl_d, root / "run/sysctl.d", root / "usr/local/lib/sysctl.d",
                                root / "usr/lib/sysctl.d", root / "lib/sysctl.d"};
  for (const auto& dir : dirs) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.size() > 5 && name.substr(name.size() - 5) == ".conf") by_name.emplace(name, it->path());
    }
  }
  std::vector<SysctlAssignment> out;
  for (const auto& [name, file] : by_name) scan(file, name, keys, out);
  scan(root / "etc/sysctl.conf", "sysctl.conf", keys, out);  // procps applies it last
  // tuned: the active profile and the profiles it includes.
  auto active = read_value(root / "etc/tuned/active_profile");
  std::vector<std::string> queue;
  if (active) {
    std::string word;
    for (char c : *active + " ") {
      if (c == ' ' || c == '\n') {
        if (!word.empty()) queue.push_back(word);
        word.clear();
      } else {
        word += c;
      }
    }
  }
  std::set<std::string> seen;
  while (!queue.empty()) {
    std::string name = queue.back();
    queue.pop_back();
    if (!seen.insert(name).second || name.find('/') != std::string::npos) continue;
    for (const char* dir : {"etc/tuned", "usr/lib/tuned"}) {
      fs::path conf = root / dir / name / "tuned.conf";
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
  return out;
}

}  // namespace spark::doctor
