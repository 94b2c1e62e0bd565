// A scratch ext4 filesystem on a loop device for integration tests: made with the loop-control
// ioctls and mkfs.ext4 (tests may run tools; the product may not), mounted with mount(2), and
// always unmounted, detached and removed, with the loop device's readahead put back.
#pragma once

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace spark::test {

namespace fs = std::filesystem;

// fork/exec with an argv (no shell); returns the exit status or -1.
inline int run_tool(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class LoopFs {
 public:
  // size_mib of backing file; direct_io avoids a second copy in the backing file's page cache.
  explicit LoopFs(uint64_t size_mib, bool direct_io = true) {
    char tmpl[] = "/var/tmp/spark-loop-XXXXXX";
    if (!::mkdtemp(tmpl)) {
      fail("mkdtemp");
      return;
    }
    dir_ = tmpl;
    fs::path backing = dir_ / "backing.img";
    mnt_ = dir_ / "mnt";
    fs::create_directories(mnt_);
    int bfd = ::open(backing.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (bfd < 0 || ::ftruncate(bfd, static_cast<off_t>(size_mib << 20)) != 0) {
      fail("backing file");
      if (bfd >= 0) ::close(bfd);
      return;
    }
    int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) {
      fail("/dev/loop-control");
      return;
    }
    for (int attempt = 0; attempt < 8 && loop_fd_ < 0; ++attempt) {
      int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
      if (n < 0) break;
      std::string dev = "/dev/loop" + std::to_string(n);
      int lfd = ::open(dev.c_str(), O_RDWR | O_CLOEXEC);
      if (lfd < 0) continue;
      loop_config cfg{};
      cfg.fd = static_cast<__u32>(bfd);
      cfg.block_size = 4096;
      if (direct_io) cfg.info.lo_flags = LO_FLAGS_DIRECT_IO;
      if (::ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
        loop_fd_ = lfd;
        name_ = "loop" + std::to_string(n);
        dev_ = dev;
      } else {
        ::close(lfd);  // taken by another process between GET_FREE and CONFIGURE: try again
      }
    }
    ::close(ctl);
    ::close(bfd);
    if (loop_fd_ < 0) {
      fail("LOOP_CONFIGURE");
      return;
    }
    ra_file_ = "/sys/block/" + name_ + "/queue/read_ahead_kb";
    std::ifstream(ra_file_) >> saved_ra_;
    if (run_tool({"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev_}) != 0) {
      fail("mkfs.ext4");
      return;
    }
    if (::mount(dev_.c_str(), mnt_.c_str(), "ext4", 0, nullptr) != 0) {
      fail("mount");
      return;
    }
    mounted_ = true;
  }
  ~LoopFs() {
    if (mounted_) ::umount2(mnt_.c_str(), 0) == 0 || ::umount2(mnt_.c_str(), MNT_DETACH);
    if (loop_fd_ >= 0) {
      if (!saved_ra_.empty()) std::ofstream(ra_file_) << saved_ra_;
      ::ioctl(loop_fd_, LOOP_CLR_FD, 0);
      ::close(loop_fd_);
    }
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  LoopFs(const LoopFs&) = delete;
  LoopFs& operator=(const LoopFs&) = delete;

  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& name() const { return name_; }  // "loop3"
  const fs::path& mnt() const { return mnt_; }
  std::string read_ahead_kb() const {
    std::string v;
    std::ifstream(ra_file_) >> v;
    return v;
  }
  void set_read_ahead_kb(const std::string& v) const { std::ofstream(ra_file_) << v; }

 private:
  void fail(const std::string& what) { error_ = what + " failed: " + std::string(strerror(errno)); }
  fs::path dir_, mnt_;
  std::string name_, dev_, ra_file_, saved_ra_, error_;
  int loop_fd_ = -1;
  bool mounted_ = false;
};

// A file of the given size with non-zero content, written and synced, not left in the page cache.
inline bool make_file(const fs::path& p, uint64_t bytes) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::vector<char> buf(1 << 20);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 131 + 7);
  for (uint64_t done = 0; done < bytes; done += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bytes - done));
    if (::write(fd, buf.data(), n) != static_cast<ssize_t>(n)) {
      ::close(fd);
      return false;
    }
  }
  ::fsync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  return true;
}

// Reads the whole file sequentially (1 MiB reads) into the page cache.
inline uint64_t read_all(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  ssize_t n;
  while ((n = ::read(fd, buf.data(), buf.size())) > 0) total += static_cast<uint64_t>(n);
  ::close(fd);
  return total;
}

}  // namespace spark::test
