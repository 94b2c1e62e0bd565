#include "profile/key_registry.h"

using spark::state::Target, spark::state::sysctl_target, spark::state::sysfs_target, spark::state::validate_sysctl_name;

namespace spark::profile {

namespace {

KeyInfo sysctl_key(const char* name, KeyType type, int64_t min, int64_t max, const char* unit, const char* summary) {
  return {name, sysctl_target(name), type, min, max, {}, unit, summary};
}

KeyInfo thp_key(const char* name, const char* file, std::vector<std::string> choices, const char* summary) {
  return {name,
          sysfs_target(std::string("kernel/mm/transparent_hugepage/") + file),
          KeyType::choice,
          0,
          0,
          std::move(choices),
          "",
          summary};
}

}  // namespace

const std::vector<KeyInfo>& known_keys() {
  static const std::vector<KeyInfo> keys = {
      sysctl_key("vm.min_free_kbytes", KeyType::kbytes, 128, INT32_MAX, "KiB",
                 "free-page reserve the kernel keeps; the buffer a driver's atomic allocations draw on"),
      sysctl_key("vm.watermark_scale_factor", KeyType::integer, 1, 3000, "1/10000 of RAM",
                 "distance between the min, low and high watermarks: how early kswapd wakes"),
      sysctl_key("vm.vfs_cache_pressure", KeyType::integer, 0, 10000, "%",
                 "how hard the kernel reclaims dentry and inode caches relative to the page cache"),
      sysctl_key("vm.dirty_ratio", KeyType::integer, 0, 100, "% of available memory",
                 "dirty page cache at which writers are throttled"),
      sysctl_key("vm.dirty_background_ratio", KeyType::integer, 0, 100, "% of available memory",
                 "dirty page cache at which background writeback starts"),
      sysctl_key("vm.dirty_bytes", KeyType::bytes, 0, INT64_MAX, "bytes",
                 "dirty_ratio as an absolute amount (setting one zeroes the other)"),
      sysctl_key("vm.dirty_background_bytes", KeyType::bytes, 0, INT64_MAX, "bytes",
                 "dirty_background_ratio as an absolute amount"),
      sysctl_key("vm.dirty_expire_centisecs", KeyType::integer, 0, INT32_MAX, "centiseconds",
                 "age at which dirty data is written out"),
      sysctl_key("vm.dirty_writeback_centisecs", KeyType::integer, 0, INT32_MAX, "centiseconds",
                 "interval of the writeback threads"),
      sysctl_key("vm.swappiness", KeyType::integer, 0, 200, "",
                 "preference for reclaiming anonymous memory (swap) over page cache"),
      sysctl_key("vm.compaction_proactiveness", KeyType::integer, 0, 100, "",
                 "how hard background compaction keeps high-order pages available"),
      sysctl_key("vm.extfrag_threshold", KeyType::integer, 0, 1000, "fragmentation index x1000",
                 "above this index the kernel compacts instead of reclaiming for high-order requests"),
      sysctl_key("vm.overcommit_memory", KeyType::integer, 0, 2, "mode", "0 heuristic, 1 always, 2 strict accounting"),
      sysctl_key("vm.zone_reclaim_mode", KeyType::integer, 0, 7, "bitmask",
                 "reclaim on the local NUMA node before allocating on another"),
      sysctl_key("vm.page-cluster", KeyType::integer, 0, 10, "log2 pages", "pages read from swap at once"),
      thp_key("thp.enabled", "enabled", {"always", "madvise", "never"}, "transparent hugepages for anonymous memory"),
      thp_key("thp.defrag", "defrag", {"always", "defer", "defer+madvise", "madvise", "never"},
              "whether a THP fault stalls in direct compaction"),
  };
  return keys;
}

const KeyInfo* find_key(const std::string& name) {
  for (const auto& k : known_keys())
    if (k.name == name) return &k;
  return nullptr;
}

std::string key_name_for(const Target& t) {
  for (const auto& k : known_keys())
    if (k.target == t) return k.name;
  return t.display();
}

Result<KeyInfo> extra_key(const std::string& name) {
  SPARK_TRY_VOID(validate_sysctl_name(name));
  if (name.rfind("vm.", 0) != 0 && name.rfind("kernel.", 0) != 0)
    return input_error("[sysctl.extra] takes vm.* and kernel.* keys only, not '" + name + "'");
  return KeyInfo{name, sysctl_target(name), KeyType::text, INT64_MIN, INT64_MAX, {}, "", "extra key"};
}

}  // namespace spark::profile
