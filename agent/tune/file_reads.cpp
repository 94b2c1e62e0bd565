#include "tune/file_reads.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <charconv>
#include <string>

#include "core/fs.h"

namespace spark::tune {

uint64_t read_step_of_device(const HostPaths& paths, dev_t dev) {
  if (major(dev) == 0) return k_default_read_step;  // no block device (tmpfs, NFS, btrfs)
  std::error_code ec;
  fs::path dir =
      fs::canonical(paths.sys / "dev/block" / (std::to_string(major(dev)) + ":" + std::to_string(minor(dev))), ec);
  if (ec) return k_default_read_step;
  if (fs::exists(dir / "partition", ec)) dir = dir.parent_path();  // partitions share their disk's queue
  auto v = read_value(dir / "queue/max_sectors_kb");
  if (!v) return k_default_read_step;
  uint64_t kib = 0;
  auto [end, err] = std::from_chars(v->data(), v->data() + v->size(), kib);
  if (err != std::errc() || kib == 0) return k_default_read_step;
  return std::min(kib << 10, k_max_read_step);
}

namespace {

// One step read through the page-fault path: the step mapped, MADV_POPULATE_READ (it faults every
// page in, as the process's own faults would, waiting for the reads), unmapped at once (a page
// the agent still mapped could not be paged out behind a loader). readahead(2) where the file
// cannot be mapped, the kernel has no MADV_POPULATE_READ (before 5.14) or the populate stopped
// short (EFAULT past the end of the file, EINTR, an I/O error): what it did not read is asked of
// readahead(2) then. False when that fails too.
bool read_step(int fd, uint64_t offset, uint64_t n) {
  void* p = ::mmap(nullptr, static_cast<size_t>(n), PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p != MAP_FAILED) {
    int rc = ::madvise(p, static_cast<size_t>(n), MADV_POPULATE_READ);
    ::munmap(p, static_cast<size_t>(n));
    if (rc == 0) return true;
  }
  return ::readahead(fd, static_cast<off64_t>(offset), static_cast<size_t>(n)) == 0;
}

}  // namespace

uint64_t read_file_range(int fd, uint64_t offset, uint64_t len, uint64_t step, const std::atomic<bool>* stop) {
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  step = std::max<uint64_t>(step, page) / page * page;
  // Mapped from a page boundary (the mappings' offsets are; a caller's may not be).
  const uint64_t lead = offset % page;
  offset -= lead;
  len += lead;
  uint64_t asked = 0;
  while (asked < len) {
    if (stop && stop->load(std::memory_order_relaxed)) break;
    const uint64_t n = std::min(step, len - asked);
    if (!read_step(fd, offset + asked, n)) break;
    asked += n;
  }
  return asked > lead ? asked - lead : 0;
}

uint64_t read_file_range(const HostPaths& paths, int fd, uint64_t offset, uint64_t len) {
  struct stat s {};
  const uint64_t step = ::fstat(fd, &s) == 0 ? read_step_of_device(paths, s.st_dev) : k_default_read_step;
  return read_file_range(fd, offset, len, step);
}

FileReader::FileReader(HostPaths paths, size_t max_pending)
    : paths_(std::move(paths)), max_pending_(std::max<size_t>(max_pending, 1)) {}

FileReader::~FileReader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FileReader::ask(Key key, Fd fd, uint64_t offset, uint64_t len) {
  if (!fd.valid() || len == 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto same = std::find_if(pending_.begin(), pending_.end(), [&](const Read& r) { return r.key == key; });
    if (same != pending_.end()) {
      same->fd = std::move(fd);
      same->offset = offset;
      same->len = len;
      ++dropped_;
    } else {
      if (pending_.size() >= max_pending_) {
        pending_.pop_front();
        ++dropped_;
      }
      pending_.push_back({key, std::move(fd), offset, len});
    }
    if (!thread_.joinable())
      thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "spark-read");  // seen apart in top and perf
        run();
      });
  }
  cv_.notify_one();
}

bool FileReader::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.empty() && !busy_;
}

uint64_t FileReader::step_of(int fd) {
  struct stat s {};
  if (::fstat(fd, &s) != 0) return k_default_read_step;
  auto it = steps_.find(s.st_dev);
  if (it == steps_.end()) it = steps_.emplace(s.st_dev, read_step_of_device(paths_, s.st_dev)).first;
  return it->second;
}

void FileReader::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !pending_.empty(); });
    if (stop_) return;
    Read r = std::move(pending_.front());
    pending_.pop_front();
    busy_ = true;
    lock.unlock();
    bytes_read_ += read_file_range(r.fd.get(), r.offset, r.len, step_of(r.fd.get()), &stop_);
    r.fd.reset();
    lock.lock();
    busy_ = false;
  }
}

}  // namespace spark::tune
