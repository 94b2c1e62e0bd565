#include "tune/process_mappings.h"

#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/fd.h"
#include "core/fs.h"
#include "core/log.h"

namespace spark::tune {

namespace {
std::optional<FileMapping> parse_maps_line(const std::string& line, pid_t pid, const FileIdSet& files);
}

Result<std::vector<FileMapping>> find_file_mappings(const HostPaths& paths, pid_t pid,
                                                    const std::vector<std::pair<dev_t, ino_t>>& files) {
  SPARK_TRY(std::string text, read_file(paths.proc / std::to_string(pid) / "maps"));
  FileIdSet set(files.begin(), files.end());
  std::vector<FileMapping> out;
  for (const auto& line : split_lines(text))
    if (auto m = parse_maps_line(line, pid, set)) out.push_back(*m);
  return out;
}

namespace {

// One line of <proc>/PID/maps -> a mapping of a file in `files`, or nullopt.
std::optional<FileMapping> parse_maps_line(const std::string& line, pid_t pid, const FileIdSet& files) {
  // 7f..-7f.. r--s 00000000 fd:01 1234   /path
  std::istringstream in(line);
  std::string range, perms, offset, dev, inode;
  if (!(in >> range >> perms >> offset >> dev >> inode)) return std::nullopt;
  if (inode == "0") return std::nullopt;
  auto dash = range.find('-');
  auto colon = dev.find(':');
  if (dash == std::string::npos || colon == std::string::npos) return std::nullopt;
  FileMapping m;
  m.pid = pid;
  m.dev = makedev(std::strtoul(dev.substr(0, colon).c_str(), nullptr, 16),
                  std::strtoul(dev.substr(colon + 1).c_str(), nullptr, 16));
  m.ino = static_cast<ino_t>(std::strtoull(inode.c_str(), nullptr, 10));
  if (!files.count({m.dev, m.ino})) return std::nullopt;
  m.start = std::strtoull(range.substr(0, dash).c_str(), nullptr, 16);
  m.end = std::strtoull(range.substr(dash + 1).c_str(), nullptr, 16);
  m.offset = std::strtoull(offset.c_str(), nullptr, 16);
  return m;
}

}  // namespace

ProcessMappings scan_file_mappings(const HostPaths& paths, const FileIdSet& files) {
  ProcessMappings out;
  if (files.empty()) return out;
  std::error_code ec;
  const pid_t self = ::getpid();
  for (auto it = fs::directory_iterator(paths.proc, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == self) continue;
    auto text = read_file(paths.proc / name / "maps");
    if (!text) continue;  // gone, or a kernel thread
    std::vector<FileMapping> maps;
    for (const auto& line : split_lines(*text))
      if (auto m = parse_maps_line(line, pid, files)) maps.push_back(*m);
    if (!maps.empty()) out[pid] = std::move(maps);
  }
  return out;
}

Result<std::map<uint64_t, VmaUsage>> vma_usages(const HostPaths& paths, pid_t pid) {
  SPARK_TRY(std::string text, read_file(paths.proc / std::to_string(pid) / "smaps"));
  std::map<uint64_t, VmaUsage> out;
  VmaUsage* cur = nullptr;
  for (const auto& line : split_lines(text)) {
    // A VMA header: "7f..-7f.. r--s 00000000 fd:01 1234 /path"; field lines are "Key:   N kB".
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') != std::string::npos &&
        line.find(':') > line.find(' ')) {
      cur = &out[std::strtoull(line.c_str(), nullptr, 16)];
      continue;
    }
    if (!cur) continue;
    auto kb = [&](const char* key) -> std::optional<uint64_t> {
      size_t n = std::strlen(key);
      if (line.compare(0, n, key) != 0) return std::nullopt;
      return std::strtoull(line.c_str() + n, nullptr, 10) * 1024;
    };
    if (auto v = kb("Rss:")) cur->rss = *v;
    if (auto v = kb("Referenced:")) cur->referenced = *v;
  }
  return out;
}

namespace {

// PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h), absent from Debian 12's headers.
constexpr uint64_t k_page_is_present = 1U << 3;
struct PageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
      category_anyof_mask, return_mask;
};
constexpr unsigned long k_pagemap_scan = _IOWR('f', 16, PmScanArg);

}  // namespace

Result<std::vector<std::pair<uint64_t, uint64_t>>> present_regions_from_entries(int pagemap_fd, uint64_t start,
                                                                                uint64_t end) {
  using Regions = std::vector<std::pair<uint64_t, uint64_t>>;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::array<uint64_t, k_pagemap_slice> entries{};
  Regions out;
  for (uint64_t at = start / page * page; at < end;) {
    const uint64_t want = std::min<uint64_t>(entries.size(), (end - at + page - 1) / page);
    ssize_t got = ::pread(pagemap_fd, entries.data(), want * sizeof(uint64_t), static_cast<off_t>(at / page * 8));
    if (got < 0) {
      if (errno == EINTR) continue;
      return Result<Regions>(errno_error("reading pagemap"));
    }
    const uint64_t n = static_cast<uint64_t>(got) / sizeof(uint64_t);
    if (n == 0) break;  // past the end of the address space: never loop forever
    for (uint64_t i = 0; i < n; ++i) {
      if (!(entries[i] >> 63)) continue;  // bit 63: page present (Documentation/admin-guide/mm/pagemap.rst)
      const uint64_t a = std::max(at + i * page, start), b = std::min(at + (i + 1) * page, end);
      if (!out.empty() && out.back().second == a)
        out.back().second = b;
      else
        out.push_back({a, b});
    }
    at += n * page;
  }
  return Result<Regions>(std::move(out));
}

std::optional<Result<std::vector<std::pair<uint64_t, uint64_t>>>> present_regions(int pagemap_fd, uint64_t start,
                                                                                  uint64_t end) {
  using Regions = std::vector<std::pair<uint64_t, uint64_t>>;
  static std::atomic<bool> missing{false};
  if (missing.load(std::memory_order_relaxed)) return present_regions_from_entries(pagemap_fd, start, end);
  std::array<PageRegion, 256> regions{};
  Regions out;
  for (uint64_t at = start; at < end;) {
    PmScanArg arg{};
    arg.size = sizeof arg;
    arg.start = at;
    arg.end = end;
    arg.vec = reinterpret_cast<uint64_t>(regions.data());
    arg.vec_len = regions.size();
    arg.category_mask = k_page_is_present;
    arg.return_mask = k_page_is_present;
    long n = ::ioctl(pagemap_fd, k_pagemap_scan, &arg);
    if (n < 0) {
      if (errno == ENOTTY || errno == EINVAL) {
        if (!missing.exchange(true))
          log_info(
              "page cache: this kernel has no PAGEMAP_SCAN (Linux 6.7+): mapped pages are read from /proc/PID/pagemap");
        return present_regions_from_entries(pagemap_fd, start, end);
      }
      return Result<Regions>(errno_error("PAGEMAP_SCAN"));
    }
    for (long i = 0; i < n; ++i) {
      const auto& r = regions[static_cast<size_t>(i)];
      if (!out.empty() && out.back().second == r.start)
        out.back().second = r.end;
      else
        out.push_back({r.start, r.end});
    }
    if (arg.walk_end <= at) break;  // no progress: never loop forever
    at = arg.walk_end;
  }
  return Result<Regions>(std::move(out));
}

std::optional<Result<uint64_t>> mapped_bytes(int pagemap_fd, uint64_t start, uint64_t end) {
  auto r = present_regions(pagemap_fd, start, end);
  if (!r) return std::nullopt;
  if (!*r) return Result<uint64_t>(r->error());
  uint64_t total = 0;
  for (const auto& [a, b] : **r) total += b - a;
  return Result<uint64_t>(total);
}

int open_pidfd_of(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

Result<void> advise_process(pid_t pid, const std::vector<std::pair<uint64_t, uint64_t>>& ranges, int advice) {
  if (ranges.empty()) return {};
  int pidfd = open_pidfd_of(pid);
  if (pidfd < 0) return errno_error("pidfd_open " + std::to_string(pid));
  Fd guard(pidfd);
  return advise_pidfd(pidfd, pid, ranges, advice);
}

Result<void> advise_pidfd(int pidfd, pid_t pid, const std::vector<std::pair<uint64_t, uint64_t>>& ranges, int advice) {
  std::vector<iovec> iov;
  // The ranges are addresses in the other process, only handed to the kernel and never dereferenced
  // here: their bits are copied into iov_base (std::bit_cast), not made a pointer of ours.
  for (const auto& [s, e] : ranges)
    iov.push_back({std::bit_cast<void*>(static_cast<uintptr_t>(s)), static_cast<size_t>(e - s)});
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

}  // namespace spark::tune
