#include "tune/page_cache.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "core/fs.h"
#include "core/log.h"

#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

namespace spark {

const char* cache_mode_name(CacheMode m) {
  switch (m) {
    case CacheMode::off: return "off";
    case CacheMode::evict: return "evict";
    case CacheMode::drop: return "drop";
  }
  return "?";
}

Result<CacheMode> parse_cache_mode(const std::string& s) {
  if (s == "off") return CacheMode::off;
  if (s == "evict") return CacheMode::evict;
  if (s == "drop") return CacheMode::drop;
  return input_error("unknown cache mode '" + s + "': use evict, drop or off");
}

const char* mapped_policy_name(MappedPolicy p) {
  switch (p) {
    case MappedPolicy::idle: return "idle";
    case MappedPolicy::cold: return "cold";
    case MappedPolicy::pageout: return "pageout";
    case MappedPolicy::off: return "off";
  }
  return "?";
}

Result<MappedPolicy> parse_mapped_policy(const std::string& s) {
  if (s == "idle") return MappedPolicy::idle;
  if (s == "cold") return MappedPolicy::cold;
  if (s == "pageout") return MappedPolicy::pageout;
  if (s == "off") return MappedPolicy::off;
  return input_error("unknown mapped-page policy '" + s + "': use idle, cold, pageout or off");
}

namespace {

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

void add_regular_files(const fs::path& p, std::vector<fs::path>& out, std::set<std::pair<dev_t, ino_t>>& seen) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return;
  if (S_ISREG(st.st_mode)) {
    if (seen.insert({st.st_dev, st.st_ino}).second) out.push_back(p);
    return;
  }
  if (!S_ISDIR(st.st_mode)) return;
  std::error_code ec;
  std::vector<fs::path> entries;
  for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) entries.push_back(it->path());
  }
  std::sort(entries.begin(), entries.end());
  for (const auto& e : entries) add_regular_files(e, out, seen);
}

}  // namespace

Result<std::vector<fs::path>> expand_files(const std::vector<std::string>& patterns) {
  std::vector<fs::path> out;
  std::set<std::pair<dev_t, ino_t>> seen;
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
      add_regular_files(fs::absolute(h).lexically_normal(), out, seen);
    }
    if (out.size() == before && hits.size() == 1 && hits[0] == pat) {
      struct stat st {};
      if (::stat(pat.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return input_error(pat + " is not a regular file or directory");
    }
  }
  return out;
}

Result<uint64_t> cached_bytes(const fs::path& file) {
  Fd f(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) return errno_error("opening " + file.string());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return errno_error("fstat " + file.string());
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t chunk = 1ULL << 30;
  uint64_t size = static_cast<uint64_t>(st.st_size), total = 0;
  std::vector<unsigned char> vec;
  for (uint64_t off = 0; off < size; off += chunk) {
    uint64_t len = std::min(chunk, size - off);
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, f.fd, static_cast<off_t>(off));
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

Result<void> evict_file(const fs::path& file) {
  Fd f(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME));
  if (f.fd < 0 && errno == EPERM) f.fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) return errno_error("opening " + file.string());
  int rc = ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_DONTNEED);
  if (rc != 0) return sys_error(rc, "fadvise DONTNEED " + file.string());
  return {};
}

Result<void> drop_caches(const HostPaths& paths) { return write_value(paths.proc_sys("vm/drop_caches"), "3"); }

Result<std::vector<FileMapping>> find_file_mappings(const HostPaths& paths, pid_t pid,
                                                    const std::vector<std::pair<dev_t, ino_t>>& files) {
  SPARK_TRY(std::string text, read_file(paths.proc / std::to_string(pid) / "maps"));
  std::vector<FileMapping> out;
  for (const auto& line : split_lines(text)) {
    // 7f..-7f.. r--s 00000000 fd:01 1234   /path
    std::istringstream in(line);
    std::string range, perms, offset, dev, inode;
    if (!(in >> range >> perms >> offset >> dev >> inode)) continue;
    if (inode == "0") continue;
    auto dash = range.find('-');
    auto colon = dev.find(':');
    if (dash == std::string::npos || colon == std::string::npos) continue;
    FileMapping m;
    m.pid = pid;
    m.start = std::strtoull(range.substr(0, dash).c_str(), nullptr, 16);
    m.end = std::strtoull(range.substr(dash + 1).c_str(), nullptr, 16);
    m.dev = makedev(std::strtoul(dev.substr(0, colon).c_str(), nullptr, 16),
                    std::strtoul(dev.substr(colon + 1).c_str(), nullptr, 16));
    m.ino = static_cast<ino_t>(std::strtoull(inode.c_str(), nullptr, 10));
    for (const auto& [d, i] : files)
      if (d == m.dev && i == m.ino) {
        out.push_back(m);
        break;
      }
  }
  return out;
}

Result<std::optional<VmaUsage>> vma_usage(const HostPaths& paths, pid_t pid, uint64_t start) {
  SPARK_TRY(std::string text, read_file(paths.proc / std::to_string(pid) / "smaps"));
  bool in_vma = false;
  std::optional<VmaUsage> u;
  for (const auto& line : split_lines(text)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') != std::string::npos &&
        line.find(':') > line.find(' ')) {
      if (in_vma) break;
      uint64_t s = std::strtoull(line.c_str(), nullptr, 16);
      in_vma = (s == start);
      if (in_vma) u = VmaUsage{};
      continue;
    }
    if (!in_vma) continue;
    auto kb = [&](const char* key) -> std::optional<uint64_t> {
      size_t n = std::strlen(key);
      if (line.compare(0, n, key) != 0) return std::nullopt;
      return std::strtoull(line.c_str() + n, nullptr, 10) * 1024;
    };
    if (auto v = kb("Rss:")) u->rss = *v;
    if (auto v = kb("Referenced:")) u->referenced = *v;
  }
  return u;
}

Result<void> advise_process(pid_t pid, const std::vector<std::pair<uint64_t, uint64_t>>& ranges, int advice) {
  if (ranges.empty()) return {};
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return errno_error("pidfd_open " + std::to_string(pid));
  Fd guard(pidfd);
  std::vector<iovec> iov;
  for (const auto& [s, e] : ranges) iov.push_back({reinterpret_cast<void*>(s), static_cast<size_t>(e - s)});
  // The kernel takes at most UIO_MAXIOV (1024) vectors per call.
  for (size_t i = 0; i < iov.size(); i += 1024) {
    size_t n = std::min<size_t>(1024, iov.size() - i);
    long rc = ::syscall(SYS_process_madvise, pidfd, iov.data() + i, n, advice, 0U);
    if (rc < 0)
      return errno_error(std::string("process_madvise(") + (advice == MADV_PAGEOUT ? "MADV_PAGEOUT" : "MADV_COLD") +
                         ") on pid " + std::to_string(pid));
  }
  return {};
}

CacheKeeper::CacheKeeper(HostPaths paths, std::vector<fs::path> files, CacheKeeperOptions options)
    : paths_(std::move(paths)), files_(std::move(files)), opt_(options) {
  for (const auto& f : files_) {
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0)
      ids_.push_back({st.st_dev, st.st_ino});
    else
      ids_.push_back({0, 0});
  }
  mapped_now_.assign(files_.size(), false);
}

void CacheKeeper::tick(std::chrono::steady_clock::time_point now) {
  ++stats_.ticks;
  if (opt_.mode == CacheMode::drop) {
    if (auto r = drop_caches(paths_); !r)
      stats_.last_error = describe(r.error());
    else
      ++stats_.drops;
    return;
  }
  if (opt_.mode != CacheMode::evict) return;
  // Evict first: the mapping scan reads every process's maps and can take a while on a busy host.
  for (size_t i = 0; i < files_.size(); ++i) {
    const auto& f = files_[i];
    if (mapped_now_[i]) continue;
    if (auto r = evict_file(f); !r)
      stats_.last_error = describe(r.error());
    else
      ++stats_.evictions;
  }
  if (opt_.mapped != MappedPolicy::off && now - last_mapped_ >= opt_.mapped_period) {
    last_mapped_ = now;
    handle_mapped(now);
  }
}

void CacheKeeper::handle_mapped(std::chrono::steady_clock::time_point now) {
  if (ids_.empty()) return;
  std::error_code ec;
  std::set<std::pair<pid_t, uint64_t>> live;
  const pid_t self = ::getpid();
  std::vector<bool> mapped(files_.size(), false);
  for (auto it = fs::directory_iterator(paths_.proc, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == self) continue;
    auto maps = find_file_mappings(paths_, pid, ids_);
    if (!maps || maps->empty()) continue;
    std::vector<std::pair<uint64_t, uint64_t>> cold, pageout;
    for (const auto& m : *maps) {
      for (size_t i = 0; i < ids_.size(); ++i)
        if (ids_[i] == std::make_pair(m.dev, m.ino)) mapped[i] = true;
      auto key = std::make_pair(pid, m.start);
      live.insert(key);
      auto& st = vmas_[key];
      if (st.in_use) continue;
      auto u = vma_usage(paths_, pid, m.start);
      if (!u || !*u) continue;
      uint64_t rss = (*u)->rss;
      bool growing = rss > st.last_rss;
      st.last_rss = rss;
      if (rss == 0 || growing) {
        st.probed.reset();
        continue;
      }
      if (opt_.mapped == MappedPolicy::pageout) {
        pageout.push_back({m.start, m.end});
        continue;
      }
      if (!st.probed) {
        cold.push_back({m.start, m.end});
        st.probed = now;
        continue;
      }
      if (opt_.mapped == MappedPolicy::cold || now - *st.probed < opt_.idle_after) continue;
      if ((*u)->referenced > 0) {
        st.in_use = true;
        continue;
      }
      pageout.push_back({m.start, m.end});
      st.paged_out = true;
      st.probed.reset();
      st.last_rss = 0;
    }
    if (auto r = advise_process(pid, cold, MADV_COLD); !r)
      stats_.last_error = describe(r.error());
    else
      stats_.cold_advices += cold.size();
    if (auto r = advise_process(pid, pageout, MADV_PAGEOUT); !r)
      stats_.last_error = describe(r.error());
    else
      stats_.pageouts += pageout.size();
  }
  for (auto it = vmas_.begin(); it != vmas_.end();) it = live.count(it->first) ? std::next(it) : vmas_.erase(it);
  mapped_now_ = mapped;
}

}  // namespace spark
