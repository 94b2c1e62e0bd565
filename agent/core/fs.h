// File helpers for procfs, sysfs, cgroupfs and the state directory. No symlinks are followed
// where a path is written; every write of state is atomic (temp file, fsync, rename, fsync dir).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/fd.h"
#include "core/result.h"

namespace spark {

namespace fs = std::filesystem;

// Whole file as text ("reading /proc/meminfo: No such file or directory").
Result<std::string> read_file(const fs::path& path);
// read_file with surrounding whitespace removed (sysctl and sysfs values).
Result<std::string> read_value(const fs::path& path);
// One write(2) of the value to an existing kernel file (sysctl, sysfs, cgroup control file),
// without O_CREAT and refusing a symlink as the last component. The kernel's errno comes back.
Result<void> write_value(const fs::path& path, const std::string& value);
// Replace a regular file atomically with the given mode; refuses when path is a symlink. Durable:
// fsync of the file before the rename and of the directory after; not durable: the rename only
// (atomic for every process, a crash of ours included; a power loss may lose it).
enum class Durability { durable, rename_only };
Result<void> atomic_write(const fs::path& path, const std::string& content, mode_t mode = 0644,
                          Durability durability = Durability::durable);
// mkdir -p with the mode for the directories it creates; refuses a symlink at the end.
Result<void> ensure_dir(const fs::path& path, mode_t mode = 0755);
// Remove a file; absent is fine.
Result<void> remove_file(const fs::path& path);
// Refuses a path on a kernel pseudo filesystem (proc, sysfs, cgroup, debugfs, tracefs, devpts,
// securityfs, bpf, configfs...: statfs magic) for `what` ("--files /proc/self"). A glob is judged
// by its part before the first wildcard; a path that does not exist is not refused here.
Result<void> refuse_pseudo_filesystem(const std::string& path_or_glob, const std::string& what);
// Split text into lines without the newline.
std::vector<std::string> split_lines(const std::string& text);
std::string trim(const std::string& s);
// Collapse every run of whitespace to one space and trim: how values are compared after a write.
std::string normalize_ws(const std::string& s);

// A pseudo file (procfs, sysfs) read whole and parsed by parse (text -> Result<T>); a parse error
// names the file ("reading /proc/meminfo: ...").
template <class Parse>
auto read_parsed(const fs::path& path, Parse parse) -> decltype(parse(std::string())) {
  SPARK_TRY(std::string text, read_file(path));
  auto parsed = parse(text);
  if (!parsed) return with_context(parsed.error(), "reading " + path.string());
  return parsed;
}

// An exclusive flock(2) on a file, released when destroyed (the descriptor closed).
class FileLock {
 public:
  FileLock() = default;
  // Blocks until the lock is held.
  static Result<FileLock> acquire(const fs::path& path);
  bool held() const { return fd_.valid(); }

 private:
  explicit FileLock(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

}  // namespace spark
