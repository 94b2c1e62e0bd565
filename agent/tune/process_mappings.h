// Which processes map a window's files, and how much of each mapping is present: <proc>/PID/maps,
// smaps and PAGEMAP_SCAN; process_madvise(2) to advise on those mappings. tune/page_cache.h says
// how the keeper uses them.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "tune/file_set.h"

#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

namespace spark::tune {

// One mapping of a window file in some process.
struct FileMapping {
  pid_t pid = 0;
  uint64_t start = 0, end = 0;
  uint64_t offset = 0;  // file offset of `start`
  dev_t dev = 0;
  ino_t ino = 0;
};
// The mappings of the given (dev, ino) files in a process, from <proc>/PID/maps.
Result<std::vector<FileMapping>> find_file_mappings(const HostPaths& paths, pid_t pid,
                                                    const std::vector<std::pair<dev_t, ino_t>>& files);
// Every process's mappings of the given files (one read of each <proc>/PID/maps; the calling
// process is skipped), by pid.
using ProcessMappings = std::map<pid_t, std::vector<FileMapping>>;
ProcessMappings scan_file_mappings(const HostPaths& paths, const FileIdSet& files);

// Rss and Referenced (bytes) of a process's VMAs by start address, from one read of
// <proc>/PID/smaps (the kernel walks the page tables of every VMA for it: read it once per scan).
struct VmaUsage {
  uint64_t rss = 0, referenced = 0;
};
Result<std::map<uint64_t, VmaUsage>> vma_usages(const HostPaths& paths, pid_t pid);
// Bytes of [start, end) that are mapped (present page-table entries) in the process whose
// <proc>/PID/pagemap is open as `pagemap_fd`, by the PAGEMAP_SCAN ioctl (Linux 6.7+): a walk of
// that range's page tables only, without the per-page accounting of smaps (measured: reading
// smaps of a 4 GiB mapping every 250 ms took a third of a core during a load).
std::optional<Result<uint64_t>> mapped_bytes(int pagemap_fd, uint64_t start, uint64_t end);
// The same walk, giving the present ranges ([start, end) addresses, merged, in order). On kernels
// without PAGEMAP_SCAN (before 6.7: Debian 12's 6.1, Ubuntu 22.04) both read the range's 8-byte
// entries of pagemap instead (present_regions_from_entries): 2 MiB read per GiB of range, the same
// page-table walk, so the keeper pages out behind a reader there too (the Debian 12 guest showed
// it did not: the walk was skipped). nullopt is kept for callers that can do without.
std::optional<Result<std::vector<std::pair<uint64_t, uint64_t>>>> present_regions(int pagemap_fd, uint64_t start,
                                                                                  uint64_t end);
// The present ranges of [start, end) from pagemap's entries (bit 63), read k_pagemap_slice at a time.
inline constexpr size_t k_pagemap_slice = 4096;  // entries per read: 32 KiB, 16 MiB of address space
Result<std::vector<std::pair<uint64_t, uint64_t>>> present_regions_from_entries(int pagemap_fd, uint64_t start,
                                                                                uint64_t end);
// process_madvise(2) on ranges of another process (MADV_COLD or MADV_PAGEOUT).
Result<void> advise_process(pid_t pid, const std::vector<std::pair<uint64_t, uint64_t>>& ranges, int advice);
// The same through a pidfd held by the caller (pid names the process in errors).
Result<void> advise_pidfd(int pidfd, pid_t pid, const std::vector<std::pair<uint64_t, uint64_t>>& ranges, int advice);
// pidfd_open(2): -1 with errno when it fails.
int open_pidfd_of(pid_t pid);

}  // namespace spark::tune
