#include "tune/file_set.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <set>

#include "core/fd.h"
#include "core/log.h"

namespace spark::tune {

namespace {

// Appends the regular files at p (a file, or every one below a directory) until out holds more
// than max; returns false once it does.
bool add_regular_files(const fs::path& p, std::vector<fs::path>& out, std::set<std::pair<dev_t, ino_t>>& seen,
                       size_t max) {
  if (out.size() > max) return false;
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return true;
  if (S_ISREG(st.st_mode)) {
    if (seen.insert({st.st_dev, st.st_ino}).second) out.push_back(p);
    return out.size() <= max;
  }
  if (!S_ISDIR(st.st_mode)) return true;
  std::error_code ec;
  std::vector<fs::path> entries;
  for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) entries.push_back(it->path());
    if (entries.size() > max + 1) break;  // the walk of a huge tree stops past the limit
  }
  std::sort(entries.begin(), entries.end());
  for (const auto& e : entries)
    if (!add_regular_files(e, out, seen, max)) return false;
  return true;
}

}  // namespace

Result<std::vector<fs::path>> expand_files(const std::vector<std::string>& patterns, size_t max_files) {
  std::vector<fs::path> out;
  std::set<std::pair<dev_t, ino_t>> seen;
  auto too_many = [&]() {
    return input_error("the window's files are more than " + std::to_string(max_files) +
                       " (the limit of files per window): name the model's own directory or its shards "
                       "(--files DIR/*.safetensors), or begin one window per model");
  };
  for (const auto& pat : patterns) {
    if (pat.empty()) return input_error("an empty file name was given");
    glob_t g{};
    int rc = ::glob(pat.c_str(), GLOB_NOSORT | GLOB_BRACE, nullptr, &g);
    if (rc == GLOB_NOMATCH) {
      ::globfree(&g);
      return sys_error(ENOENT, "no file matches '" + pat + "'");
    }
    if (rc != 0) {
      ::globfree(&g);
      return sys_error(EIO, "expanding '" + pat + "' failed");
    }
    std::vector<std::string> hits(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    ::globfree(&g);
    std::sort(hits.begin(), hits.end());
    size_t before = out.size();
    for (const auto& h : hits) {
      struct stat st {};
      if (::stat(h.c_str(), &st) != 0) return errno_error("stat " + h);
      if (!add_regular_files(fs::absolute(h).lexically_normal(), out, seen, max_files)) return too_many();
    }
    if (out.size() == before && hits.size() == 1 && hits[0] == pat) {
      struct stat st {};
      if (::stat(pat.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return input_error(pat + " is not a regular file or directory");
    }
  }
  if (out.size() > max_files) return too_many();
  return out;
}

namespace {

// cachestat(2), Linux 6.5: the page-cache state of a file range without mapping it. Not in
// Debian 12's headers; the number is the same in the generic and x86_64 tables.
constexpr long k_sys_cachestat = 451;
struct CachestatRange {
  uint64_t off, len;
};
struct Cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

}  // namespace

// cachestat over the whole open file, or nullopt when the kernel has no cachestat.
std::optional<Result<CacheCounts>> cache_counts_of(int fd, const fs::path& file) {
  static std::atomic<bool> missing{false};
  if (missing.load(std::memory_order_relaxed)) return std::nullopt;
  CachestatRange range{0, 0};  // len 0: to the end of the file
  Cachestat cs{};
  if (::syscall(k_sys_cachestat, fd, &range, &cs, 0U) == 0)
    return Result<CacheCounts>(CacheCounts{cs.nr_cache, cs.nr_evicted});
  if (errno == ENOSYS) {
    if (!missing.exchange(true))
      log_info("page cache: this kernel has no cachestat (Linux 6.5+): cached pages are counted with mincore");
    return std::nullopt;
  }
  return Result<CacheCounts>(errno_error("cachestat " + file.string()));
}

namespace {

// Pages of an open file in the page cache, or nullopt when the kernel has no cachestat.
std::optional<Result<uint64_t>> cachestat_pages(int fd, const fs::path& file) {
  auto counts = cache_counts_of(fd, file);
  if (!counts) return std::nullopt;
  if (!*counts) return Result<uint64_t>(counts->error());
  return Result<uint64_t>((**counts).cached_pages);
}

}  // namespace

// Pages of the file cached, by cachestat; nullopt without it (the keeper then fadvises blindly).
std::optional<Result<uint64_t>> cached_pages_of(int fd, const fs::path& file) { return cachestat_pages(fd, file); }

namespace {

Result<uint64_t> mincore_bytes(int fd, const fs::path& file) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_error("fstat " + file.string());
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t chunk = 1ULL << 30;
  uint64_t size = static_cast<uint64_t>(st.st_size), total = 0;
  std::vector<unsigned char> vec;
  for (uint64_t off = 0; off < size; off += chunk) {
    uint64_t len = std::min(chunk, size - off);
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(off));
    if (m == MAP_FAILED) return errno_error("mapping " + file.string());
    vec.resize((len + page - 1) / page);
    int rc = ::mincore(m, len, vec.data());
    int err = errno;
    ::munmap(m, len);
    if (rc != 0) return sys_error(err, "mincore " + file.string());
    for (unsigned char v : vec) total += (v & 1) ? page : 0;
  }
  return std::min(total, size);
}

}  // namespace

Result<uint64_t> cached_bytes(const fs::path& file) {
  Fd f(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.get() < 0) return errno_error("opening " + file.string());
  return cached_bytes_fd(f.get(), file);
}

Result<uint64_t> cached_bytes_fd(int fd, const fs::path& file) {
  if (auto pages = cachestat_pages(fd, file)) {
    SPARK_TRY(uint64_t n, std::move(*pages));
    struct stat st {};
    if (::fstat(fd, &st) != 0) return errno_error("fstat " + file.string());
    return std::min<uint64_t>(n * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)), static_cast<uint64_t>(st.st_size));
  }
  return mincore_bytes(fd, file);
}

namespace {

// A descriptor to advise the kernel about a file: O_NOATIME where the caller owns the file or may
// (EPERM otherwise: plain read-only then). -1 with errno set on failure.
int open_for_advice(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  return fd;
}

}  // namespace

Result<void> evict_file(const fs::path& file) {
  Fd f(open_for_advice(file));
  if (f.get() < 0) return errno_error("opening " + file.string());
  int rc = ::posix_fadvise(f.get(), 0, 0, POSIX_FADV_DONTNEED);
  if (rc != 0) return sys_error(rc, "fadvise DONTNEED " + file.string());
  return {};
}

FdCache::~FdCache() {
  for (auto& e : lru_) ::close(e.fd);
}

int FdCache::get(const void* owner, size_t index, const fs::path& path) {
  Key k{owner, index};
  if (auto it = index_.find(k); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->fd;
  }
  if (capacity_ == 0) {
    errno = EMFILE;
    return -1;
  }
  while (lru_.size() >= capacity_) {
    ::close(lru_.back().fd);
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  int fd = open_for_advice(path);
  if (fd < 0) return -1;
  lru_.push_front({k, fd});
  index_[k] = lru_.begin();
  return fd;
}

void FdCache::drop(const void* owner, size_t index) {
  auto it = index_.find({owner, index});
  if (it == index_.end()) return;
  ::close(it->second->fd);
  lru_.erase(it->second);
  index_.erase(it);
}

void FdCache::drop_owner(const void* owner) {
  for (auto it = lru_.begin(); it != lru_.end();) {
    if (it->key.owner == owner) {
      ::close(it->fd);
      index_.erase(it->key);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace spark::tune
