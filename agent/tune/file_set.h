// The files of a load window: the names a user gave -> regular files, what of each is in the page
// cache, the eviction of one file, and the descriptors that the keepers of an agent share (FdCache).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark::tune {

// The most files one window may name (issue 13): a model cache holds thousands of files, a whole
// tree may hold more. Past it a window is refused with what to do instead. The keeper never holds a
// descriptor per file (see FdCache), so this bounds the memory and the work of a window, not its
// descriptors.
inline constexpr size_t k_max_window_files = 100'000;

// Paths, directories (every regular file below, recursively) and globs ("/models/x/*.safetensors")
// -> regular files, each once. A pattern that matches nothing is an error that names it. More than
// max_files files is an input error that gives the limit (the walk stops there).
Result<std::vector<fs::path>> expand_files(const std::vector<std::string>& patterns,
                                           size_t max_files = k_max_window_files);

// Bytes of the file in the page cache: cachestat(2) (Linux 6.5+), else mmap + mincore. No page is
// read in either way.
Result<uint64_t> cached_bytes(const fs::path& file);
Result<uint64_t> cached_bytes_fd(int fd, const fs::path& file);
// Pages of an open file in the page cache by cachestat(2); nullopt on kernels without it.
std::optional<Result<uint64_t>> cached_pages_of(int fd, const fs::path& file);
// cachestat(2) of the whole open file: pages cached, and pages reclaim evicted whose shadow
// entries remain (fadvise DONTNEED and drop_caches leave none); nullopt on kernels without it.
struct CacheCounts {
  uint64_t cached_pages = 0;
  uint64_t evicted_pages = 0;
};
std::optional<Result<CacheCounts>> cache_counts_of(int fd, const fs::path& file);
// POSIX_FADV_DONTNEED over the whole file.
Result<void> evict_file(const fs::path& file);

// A file by its identity (device, inode), as <proc>/PID/maps names it.
using FileId = std::pair<dev_t, ino_t>;
struct FileIdHash {
  size_t operator()(const FileId& f) const noexcept {
    return std::hash<uint64_t>()(static_cast<uint64_t>(f.first) * 0x9E3779B97F4A7C15ull ^
                                 static_cast<uint64_t>(f.second));
  }
};
using FileIdSet = std::unordered_set<FileId, FileIdHash>;

// Descriptors of window files, shared by every keeper of an agent: at most `capacity` open at
// once, least recently used closed first. A window over 35 000 files once held 35 041 descriptors
// until the agent ran out (issue 13 defect 1); now a file past the capacity is opened for the pass
// that needs it and closed after (measured, docs/benchmarks-load-window.md).
class FdCache {
 public:
  explicit FdCache(size_t capacity) : capacity_(capacity) {}
  ~FdCache();
  FdCache(const FdCache&) = delete;
  FdCache& operator=(const FdCache&) = delete;
  // The descriptor of (owner, index), opening `path` when it is not held: -1 with errno on failure.
  int get(const void* owner, size_t index, const fs::path& path);
  // Closes (owner, index): its file was replaced or failed.
  void drop(const void* owner, size_t index);
  // Closes every descriptor of owner (its keeper ends).
  void drop_owner(const void* owner);
  size_t open_count() const { return lru_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  struct Key {
    const void* owner;
    size_t index;
    bool operator==(const Key& o) const { return owner == o.owner && index == o.index; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const noexcept {
      return std::hash<const void*>()(k.owner) ^ (std::hash<size_t>()(k.index) * 0x9E3779B97F4A7C15ull);
    }
  };
  struct Entry {
    Key key;
    int fd;
  };
  size_t capacity_;
  std::list<Entry> lru_;  // front: most recently used
  std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index_;
};
inline constexpr size_t k_keeper_fd_capacity = 256;  // all windows of an agent together

}  // namespace spark::tune
