#include "telemetry/cgroup_resolver.h"

#include <sys/stat.h>

#include <filesystem>

namespace spark::telemetry {

std::string CgroupResolver::path_of(uint64_t id) {
  if (id == 0) return "";
  for (const auto& [cid, p] : cache_)
    if (cid == id) return p;
  std::string found;
  for (const auto& base : {paths_.cgroup / "memory", paths_.cgroup / "unified", paths_.cgroup}) {
    std::error_code ec;
    struct stat st {};
    if (::stat(base.c_str(), &st) != 0) continue;
    if (st.st_ino == id) {
      found = "/";
      break;
    }
    for (auto it = std::filesystem::recursive_directory_iterator(
             base, std::filesystem::directory_options::skip_permission_denied, ec);
         it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (!it->is_directory(ec)) continue;
      if (::stat(it->path().c_str(), &st) == 0 && st.st_ino == id) {
        found = "/" + std::filesystem::relative(it->path(), base).string();
        break;
      }
    }
    if (!found.empty()) break;
  }
  if (!found.empty()) cache_.emplace_back(id, found);
  return found;
}

}  // namespace spark::telemetry
