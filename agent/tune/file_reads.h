// Reads of file ranges into the page cache (the cache keeper's reads back and ahead), and the thread
// that makes them.
//
// One readahead(2) (or POSIX_FADV_WILLNEED) reads at most max(bdi io_pages, the file's ra_pages)
// pages and drops the rest of the request (mm/readahead.c, force_page_cache_ra). Measured on the dev
// VM (vda: read_ahead_kb 8192, max_sectors_kb 4096), a 256 MiB file evicted, one readahead of all of
// it: 8 MiB cached; with read_ahead_kb 128 or 16 (what a window's throttle sets, copied into the
// file's ra_pages at open(2)): 4 MiB, max_sectors_kb, which is the bdi's io_pages. So a range is read
// in steps of the device's queue/max_sectors_kb: what one call reads whole whatever the readahead
// setting. A fixed 128 KiB step (the kernel's default read_ahead_kb) reads whole too, with 32 times
// the calls: 0.12-0.14 s of system time per 512 MiB against 0.10 s in 4 MiB steps, the same wall
// time (docs/benchmarks-load-window.md, thirteenth run). 128 KiB is the step where the file has no
// block device (tmpfs, NFS, btrfs's anonymous device): a bdi without a queue keeps the io_pages it
// was allocated with, VM_READAHEAD_PAGES, 128 KiB.
//
// Each step is read through the page-fault path, not readahead(2): the step is mapped,
// MADV_POPULATE_READ faults it in (waiting for the reads) and it is unmapped at once (a page the
// agent still mapped could not be paged out behind a loader). readahead(2) fills the page cache
// with order-0 folios (page_cache_ra_unbounded) where the process's own faults read around in
// large folios that it then maps with PMDs: on the dev VM (6.18, ext4 on vda) 512 MiB faulted in
// by a mapping were 472 MiB PMD-mapped, read by readahead(2) 0; and a CPU server whose weights the
// keeper read back by readahead(2) ran 0.89x untuned after its second pass (its TLB), 0.97x with
// the keeper off (docs/benchmarks-load-window.md, fourteenth run). Populated in steps of 2-16 MiB,
// the same 512 MiB were 472 MiB PMD-mapped, read in 0.22-0.54 s (readahead(2) in steps: 0.19-1.01 s).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "core/fd.h"
#include "core/host_paths.h"

namespace spark::tune {

constexpr uint64_t k_default_read_step = 128ULL << 10;
// The largest step: a stop waits for one step (4 MiB is ~10 ms at 400 MB/s).
constexpr uint64_t k_max_read_step = 4ULL << 20;

// The step for files on the device `dev`: <sys>/dev/block/MAJ:MIN/queue/max_sectors_kb (a
// partition's is its disk's), at most k_max_read_step; k_default_read_step where the device has no
// queue there or it cannot be read.
uint64_t read_step_of_device(const HostPaths& paths, dev_t dev);

// [offset, offset + len) of fd read into the page cache in steps of at most `step` bytes (above), stopping between
// two calls once *stop is set. Returns the bytes asked (fewer when stopped, or where a call failed:
// a pipe, a file opened without read access).
uint64_t read_file_range(int fd, uint64_t offset, uint64_t len, uint64_t step, const std::atomic<bool>* stop = nullptr);
// The same in the step of fd's device.
uint64_t read_file_range(const HostPaths& paths, int fd, uint64_t offset, uint64_t len);

// A thread of its own that makes the reads asked of it, so that who asks (the agent's loop, the
// keeper's follower) never waits on them: a readahead(2) allocates and submits every page, and waits
// in the block layer while the device's queue is full (a read back of 448 MiB is more than a second
// at 400 MB/s). Bounded: one read pending per key, at most max_pending keys.
class FileReader {
 public:
  using Key = std::pair<pid_t, uint64_t>;  // what a read is for (the keeper's: one mapping)
  explicit FileReader(HostPaths paths, size_t max_pending = 64);
  // Stops between two steps of a read under way (it is not finished) and joins the thread.
  ~FileReader();
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;
  // Reads [offset, offset + len) of fd, which the reader owns from then on. A read pending for the
  // same key is replaced: the newer range is the one wanted (a loader's front moved on past the
  // older). Past max_pending keys, the oldest pending read is dropped. A read under way goes on.
  void ask(Key key, Fd fd, uint64_t offset, uint64_t len);
  uint64_t bytes_read() const { return bytes_read_.load(std::memory_order_relaxed); }  // asked of the kernel
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }        // replaced or past the bound
  // Nothing pending and no read under way.
  bool idle() const;

 private:
  struct Read {
    Key key;
    Fd fd;
    uint64_t offset = 0, len = 0;
  };
  void run();
  uint64_t step_of(int fd);  // the reader thread's only
  HostPaths paths_;
  size_t max_pending_;
  std::map<dev_t, uint64_t> steps_;  // per device, read once
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Read> pending_;
  bool busy_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> bytes_read_{0}, dropped_{0};
  std::thread thread_;  // started at the first ask
};

}  // namespace spark::tune
