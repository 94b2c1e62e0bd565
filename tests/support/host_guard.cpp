#include "support/host_guard.h"

#include "core/fs.h"
#include "tune/actuator.h"

using spark::tune::normalize_value;

namespace spark::test {

KernelValueGuard::KernelValueGuard(const std::vector<std::string>& files) {
  for (const auto& f : files) {
    auto v = read_value(f);
    if (v) saved_[f] = *v;
  }
}

KernelValueGuard::~KernelValueGuard() {
  // Twice: coupled keys (dirty_ratio / dirty_bytes) zero each other, and the second pass settles them.
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& [f, v] : saved_) {
      std::string want = normalize_value(v);
      if (kernel_value(f) == want) continue;
      if (want == "0" && (f.ends_with("dirty_bytes") || f.ends_with("dirty_background_bytes"))) continue;
      (void)write_value(f, want);
    }
}

std::string KernelValueGuard::original(const std::string& file) const {
  auto it = saved_.find(file);
  return it == saved_.end() ? "" : normalize_value(it->second);
}

std::vector<std::string> profile_kernel_files() {
  std::vector<std::string> files;
  for (const char* k :
       {"min_free_kbytes", "watermark_scale_factor", "vfs_cache_pressure", "dirty_ratio", "dirty_background_ratio",
        "dirty_bytes", "dirty_background_bytes", "dirty_expire_centisecs", "dirty_writeback_centisecs", "swappiness",
        "compaction_proactiveness", "extfrag_threshold", "overcommit_memory", "zone_reclaim_mode", "page-cluster"})
    files.push_back(std::string("/proc/sys/vm/") + k);
  files.push_back("/sys/kernel/mm/transparent_hugepage/enabled");
  files.push_back("/sys/kernel/mm/transparent_hugepage/defrag");
  return files;
}

std::string kernel_value(const std::string& file) {
  auto v = read_value(file);
  return v ? normalize_value(*v) : "";
}

}  // namespace spark::test
