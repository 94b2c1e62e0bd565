// Page-cache control for load windows: keep the window's own files out of the cache (evict), or the
// known manual recipe (drop), and measure what is cached (mincore).
//
// evict: POSIX_FADV_DONTNEED over every window file at each tick. It drops clean, unmapped pages of
// those files only: every other file keeps its cache. Pages that a process still maps are skipped
// by the kernel (mapping_evict_folio refuses mapped folios), so an mmap loader needs more:
//
// Mapped pages (measured, see docs/benchmarks-load-window.md): every `mapped_period` the keeper finds
// the mappings of the window files in every process (<proc>/PID/maps, matched by device and inode)
// and follows each mapping (VMA) through <proc>/PID/smaps:
//   - while its Rss grows, its process is reading it: left alone;
//   - once its Rss stops growing, it is probed once: process_madvise(MADV_COLD) through a pidfd
//     clears the accessed bits of its pages (and puts them on the inactive list);
//   - `idle_after` later, Referenced tells: no page touched since the probe means the process is
//     done with it (a loader that copied the weights out): process_madvise(MADV_PAGEOUT) frees its
//     clean file pages. Pages touched means the process uses the mapping in place (a CPU
//     llama.cpp server): it is never paged out in this window, so its next request does not
//     fault the model back in. Cost: two madvise calls per mapping, not one per tick; an
//     MADV_COLD of every mapping at every tick was measured to double an mmap load.
//   - a file that some process maps is not fadvised while mapped: DONTNEED cannot drop its mapped
//     pages, deactivates them, and drops the read-around pages the loader is about to fault in
//     (measured: an mmap load 2.5x slower). It is evicted again once no process maps it.
// MappedPolicy::cold only probes (pages reclaimed first under pressure, never forced out); pageout
// pages out every mapping whose Rss stopped growing, without the probe; off leaves mapped pages alone.
//
// drop: writes 3 to vm/drop_caches at each tick, the manual recipe (every process loses its cache).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark {

enum class CacheMode { off, evict, drop };
enum class MappedPolicy { idle, cold, pageout, off };

const char* cache_mode_name(CacheMode m);
Result<CacheMode> parse_cache_mode(const std::string& s);
const char* mapped_policy_name(MappedPolicy p);
Result<MappedPolicy> parse_mapped_policy(const std::string& s);

// Paths, directories (every regular file below, recursively) and globs ("/models/x/*.safetensors")
// -> regular files, each once. A pattern that matches nothing is an error that names it.
Result<std::vector<fs::path>> expand_files(const std::vector<std::string>& patterns);

// Pages of the file in the page cache, in bytes (mmap + mincore; no page is read in).
Result<uint64_t> cached_bytes(const fs::path& file);
// POSIX_FADV_DONTNEED over the whole file.
Result<void> evict_file(const fs::path& file);
// Writes "3" to <proc>/sys/vm/drop_caches (page cache, dentries and inodes: the recipe).
Result<void> drop_caches(const HostPaths& paths);

// One mapping of a window file in some process.
struct FileMapping {
  pid_t pid = 0;
  uint64_t start = 0, end = 0;
  dev_t dev = 0;
  ino_t ino = 0;
};
// The mappings of the given (dev, ino) files in a process, from <proc>/PID/maps.
Result<std::vector<FileMapping>> find_file_mappings(const HostPaths& paths, pid_t pid,
                                                    const std::vector<std::pair<dev_t, ino_t>>& files);
// Rss and Referenced (bytes) of the VMA that starts at `start`, from <proc>/PID/smaps.
struct VmaUsage {
  uint64_t rss = 0, referenced = 0;
};
Result<std::optional<VmaUsage>> vma_usage(const HostPaths& paths, pid_t pid, uint64_t start);
// process_madvise(2) on ranges of another process (MADV_COLD or MADV_PAGEOUT).
Result<void> advise_process(pid_t pid, const std::vector<std::pair<uint64_t, uint64_t>>& ranges, int advice);

struct CacheKeeperOptions {
  CacheMode mode = CacheMode::evict;
  MappedPolicy mapped = MappedPolicy::idle;
  std::chrono::milliseconds mapped_period{250};
  std::chrono::milliseconds idle_after{1000};
};

struct CacheKeeperStats {
  uint64_t ticks = 0;
  uint64_t evictions = 0;      // fadvise calls
  uint64_t drops = 0;          // drop_caches writes
  uint64_t cold_advices = 0;   // MADV_COLD ranges
  uint64_t pageouts = 0;       // MADV_PAGEOUT ranges
  std::string last_error;
};

// The page-cache side of one window: call tick() at the cache interval.
class CacheKeeper {
 public:
  CacheKeeper(HostPaths paths, std::vector<fs::path> files, CacheKeeperOptions options);
  void tick(std::chrono::steady_clock::time_point now);
  const CacheKeeperStats& stats() const { return stats_; }
  const std::vector<fs::path>& files() const { return files_; }

 private:
  void handle_mapped(std::chrono::steady_clock::time_point now);
  HostPaths paths_;
  std::vector<fs::path> files_;
  std::vector<std::pair<dev_t, ino_t>> ids_;
  std::vector<bool> mapped_now_;  // per file: some process maps it (last scan)
  CacheKeeperOptions opt_;
  CacheKeeperStats stats_;
  std::chrono::steady_clock::time_point last_mapped_{};
  struct VmaState {
    uint64_t last_rss = 0;
    std::optional<std::chrono::steady_clock::time_point> probed;  // when MADV_COLD cleared its bits
    bool in_use = false;     // touched after the probe: left alone from then on
    bool paged_out = false;
  };
  std::map<std::pair<pid_t, uint64_t>, VmaState> vmas_;
};

}  // namespace spark
