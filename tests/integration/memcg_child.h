// A child memory cgroup under this process's own cgroup, removed at the end, and a forked "hog"
// process placed in it. For integration tests only. Works on either kernel set-up:
// - cgroup v1: <cgroup>/memory/<own memcg>/<name>, memory.limit_in_bytes;
// - cgroup v2 with the memory controller: <cgroup>/<base>/<name>, memory.max (memory.swap.max 0),
//   where <base> is this process's own cgroup made able to have memory children (v2_delegation()).
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <sstream>
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

// The "0::/path" line of /proc/self/cgroup (cgroup v2); "" when absent.
inline std::string own_v2_cgroup(const HostPaths& paths) {
  auto text = read_file(paths.proc / "self/cgroup");
  if (!text.ok()) return "";
  for (const auto& line : split_lines(*text))
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  return "";
}

inline bool has_word(const std::string& text, const std::string& word) {
  std::istringstream in(text);
  std::string w;
  while (in >> w)
    if (w == word) return true;
  return false;
}

// The leaf the tests' processes move to on v2 (the no-internal-process rule: a cgroup that enables
// a controller for its children may hold no processes itself, the root excepted).
inline constexpr const char* k_v2_leaf = "spark-tune-tests";

struct V2Delegation {
  std::string base;  // "/..." in the unified hierarchy: memory is enabled for its children
  std::string why;   // set when not possible
};

// Makes this process's cgroup able to have children with the memory controller, leaf-safe:
//  1. base = our own cgroup (or its parent when we already sit in a k_v2_leaf made by us or by
//     a sibling test process of the same tree);
//  2. the memory controller must reach base (memory in base's cgroup.controllers: its parent
//     enables it; under systemd, a unit or scope with Delegate=yes or MemoryAccounting=yes);
//  3. unless base already enables memory: every process in base (this one, the test runner,
//     sibling test processes) moves into base/k_v2_leaf, then "+memory" goes into base's
//     cgroup.subtree_control. Nothing else on the host changes: base is the tests' own cgroup and
//     systemd removes it with the unit. The leaf and the enabled controller stay for the process's
//     life (other MemcgChild instances, sibling test binaries, use them too).
// v2_delegation() does it once per process; v2_delegation_at() is the step itself (fixture trees).
inline V2Delegation v2_delegation_at(const HostPaths& paths, const std::string& own) {
  V2Delegation d;
  fs::path root = paths.cgroup;
  auto dir = [&](const std::string& rel) { return rel == "/" ? root : root / rel.substr(1); };
  std::string base = own.empty() ? "/" : own;
  if (fs::path(base).filename() == k_v2_leaf) {
    std::string up = fs::path(base).parent_path().string();
    base = up.empty() ? "/" : up;
  }
  d.base = base;
  auto subtree = read_file(dir(base) / "cgroup.subtree_control");
  if (subtree.ok() && has_word(*subtree, "memory")) return d;  // delegated already (or a sibling did it)
  if (base != "/") {
    auto ctrls = read_file(dir(base) / "cgroup.controllers");
    if (!ctrls.ok() || !has_word(*ctrls, "memory")) {
      d.why = "the memory controller does not reach " + base +
              " (its parent's cgroup.subtree_control lacks memory): run the tests in a unit with Delegate=yes";
      return d;
    }
    fs::path leaf = dir(base) / k_v2_leaf;
    std::error_code ec;
    fs::create_directory(leaf, ec);
    if (ec) {
      d.why = "cannot create " + leaf.string() + ": " + ec.message();
      return d;
    }
  }
  for (int round = 0; round < 50; ++round) {
    if (base != "/") {
      auto procs = read_file(dir(base) / "cgroup.procs");
      if (!procs.ok()) {
        d.why = "reading " + (dir(base) / "cgroup.procs").string() + ": " + procs.error().what();
        return d;
      }
      for (const auto& line : split_lines(*procs))
        if (!trim(line).empty()) (void)write_value(dir(base) / k_v2_leaf / "cgroup.procs", trim(line));
    }
    auto w = write_value(dir(base) / "cgroup.subtree_control", "+memory");
    if (w.ok()) return d;
    if (w.error().code().value() != EBUSY) {
      d.why = std::string("enabling memory in ") + (dir(base) / "cgroup.subtree_control").string() + ": " +
              w.error().what();
      return d;
    }
    ::usleep(20000);  // a process forked meanwhile: move it too
  }
  d.why = "processes keep appearing in " + base + ": cannot enable the memory controller for its children";
  return d;
}

inline const V2Delegation& v2_delegation(const HostPaths& paths) {
  static const V2Delegation d = v2_delegation_at(paths, own_v2_cgroup(paths));
  return d;
}

// Whether <cgroup> is the unified hierarchy with the memory controller (and no v1 memory).
inline bool memory_is_v2(const HostPaths& paths) {
  if (!own_memory_cgroup(paths).empty()) return false;
  auto c = read_file(paths.cgroup / "cgroup.controllers");
  return c.ok() && has_word(*c, "memory");
}

class MemcgChild {
 public:
  // Creates <own memcg>/<name> with the given limit; ok() false when not possible (why()).
  MemcgChild(const HostPaths& paths, const std::string& name, uint64_t limit_bytes) {
    std::string own = own_memory_cgroup(paths);
    fs::path mem_root = paths.cgroup / "memory";
    v2_ = own.empty() && memory_is_v2(paths);
    if (v2_) {
      const V2Delegation& d = v2_delegation(paths);
      if (!d.why.empty()) {
        why_ = d.why;
        return;
      }
      own = d.base;
      mem_root = paths.cgroup;
    } else if (own.empty()) {
      why_ = "no memory controller: neither cgroup v1 memory in /proc/self/cgroup nor cgroup2 with memory";
      return;
    }
    paths_ = paths;
    relative_ = (own == "/" ? "" : own) + "/" + name;
    dir_ = mem_root / relative_.substr(1);
    std::error_code ec;
    if (!std::filesystem::create_directory(dir_, ec)) {
      why_ = "cannot create " + dir_.string() + ": " + ec.message();
      dir_.clear();
      return;
    }
    auto w = write_value(dir_ / (v2_ ? "memory.max" : "memory.limit_in_bytes"), std::to_string(limit_bytes));
    if (!w.ok()) {
      why_ = w.error().what();
      return;
    }
    // v1 here has no swap accounting in the limit; on v2 the hog must not escape to swap either.
    if (v2_ && fs::exists(dir_ / "memory.swap.max")) (void)write_value(dir_ / "memory.swap.max", "0");
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
  bool v2() const { return v2_; }
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
      if (::read(ready[0], &c, 1) != 1 || c != 'g') ::_exit(3);  // never runs outside the cgroup
      ::prctl(PR_SET_NAME, comm.c_str());
      body();
      ::_exit(0);
    }
    ::close(ready[0]);
    if (pid > 0) {
      pid_ = pid;
      tune::HostActuator act(paths_);
      // The target is relative to <cgroup>: v1's memory hierarchy is <cgroup>/memory, v2's is <cgroup>.
      std::string target = (v2_ ? relative_.substr(1) : "memory" + relative_) + "/cgroup.procs";
      auto w = act.trigger({state::TargetKind::cgroup, target}, std::to_string(pid));
      if (!w.ok()) why_ = w.error().what();
      (void)!::write(ready[1], w.ok() ? "g" : "x", 1);
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
  bool v2_ = false;
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
