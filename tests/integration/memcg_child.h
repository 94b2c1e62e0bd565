// A child memory cgroup (cgroup v1) under this process's own memory cgroup, removed at the end,
// and a forked "hog" process placed in it. For integration tests only.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "core/fs.h"
#include "core/host_paths.h"
#include "core/memory_cgroup.h"
#include "tune/actuator.h"

namespace spark::test {

// "/process_api/x": this process's cgroup in the v1 memory hierarchy; "" when the host has none.
inline std::string own_memory_cgroup(const HostPaths& paths) {
  auto h = find_memory_hierarchy(paths);
  if (!h.ok() || h->version != CgroupVersion::v1) return "";
  auto own = memory_cgroup_of(paths, *h, 0);
  return own.ok() ? *own : "";
}

class MemcgChild {
 public:
  // Creates <own memcg>/<name> with the given limit; ok() false when not possible (why()).
  MemcgChild(const HostPaths& paths, const std::string& name, uint64_t limit_bytes) {
    std::string own = own_memory_cgroup(paths);
    if (own.empty()) {
      why_ = "no cgroup v1 memory controller in /proc/self/cgroup";
      return;
    }
    paths_ = paths;
    relative_ = (own == "/" ? "" : own) + "/" + name;
    dir_ = paths.cgroup / "memory" / relative_.substr(1);
    std::error_code ec;
    if (!std::filesystem::create_directory(dir_, ec)) {
      why_ = "cannot create " + dir_.string() + ": " + ec.message();
      dir_.clear();
      return;
    }
    auto w = write_value(dir_ / "memory.limit_in_bytes", std::to_string(limit_bytes));
    if (!w.ok()) {
      why_ = w.error().what();
      return;
    }
    ok_ = true;
  }
  ~MemcgChild() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) {
      for (int i = 0; i < 50 && ::rmdir(dir_.c_str()) != 0 && errno == EBUSY; ++i) ::usleep(20000);
    }
  }
  bool ok() const { return ok_; }
  const std::string& why() const { return why_; }
  const std::filesystem::path& dir() const { return dir_; }
  const std::string& relative() const { return relative_; }  // path inside the memory hierarchy
  uint64_t inode() const {
    struct stat st {};
    return ::stat(dir_.c_str(), &st) == 0 ? st.st_ino : 0;
  }

  // Forks a child named comm that joins the cgroup, then runs body(); returns its pid.
  template <typename Body>
  pid_t spawn(const std::string& comm, Body body) {
    int ready[2];
    if (::pipe(ready) != 0) return -1;
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[1]);
      char c;
      if (::read(ready[0], &c, 1) != 1) ::_exit(3);
      ::prctl(PR_SET_NAME, comm.c_str());
      body();
      ::_exit(0);
    }
    ::close(ready[0]);
    if (pid > 0) {
      pid_ = pid;
      HostActuator act(paths_);
      auto w = act.trigger({TargetKind::cgroup, "memory" + relative_ + "/cgroup.procs"}, std::to_string(pid));
      if (!w.ok()) why_ = w.error().what();
      ::write(ready[1], "g", 1);
    }
    ::close(ready[1]);
    return w_ok() ? pid : -1;
  }
  // Waits for the spawned child; returns its wait status.
  int wait() {
    int status = 0;
    if (pid_ > 0) ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  bool w_ok() const { return why_.empty(); }
  HostPaths paths_;
  std::filesystem::path dir_;
  std::string relative_;
  std::string why_;
  bool ok_ = false;
  pid_t pid_ = -1;
};

// Touches anonymous memory until killed.
inline void hog_memory() {
  for (;;) {
    char* p = static_cast<char*>(::malloc(1 << 20));
    if (!p) continue;
    std::memset(p, 0x5a, 1 << 20);
  }
}

}  // namespace spark::test
