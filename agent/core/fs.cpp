#include "core/fs.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cctype>
#include <cstring>

namespace spark {

namespace {

Result<void> fsync_dir(const fs::path& dir) {
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() < 0) return errno_error("opening " + dir.string());
  if (::fsync(d.get()) != 0) return errno_error("fsync " + dir.string());
  return {};
}

}  // namespace

Result<std::string> read_file(const fs::path& path) {
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.get() < 0) return errno_error("reading " + path.string());
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(f.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("reading " + path.string());
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<void> refuse_pseudo_filesystem(const std::string& path_or_glob, const std::string& what) {
  std::string p = path_or_glob;
  size_t wild = p.find_first_of("*?[");
  if (wild != std::string::npos) {
    size_t slash = p.rfind('/', wild);
    p = slash == std::string::npos ? "." : p.substr(0, slash + 1);
    if (p.empty()) p = "/";
  }
  struct statfs sf {};
  if (::statfs(p.c_str(), &sf) != 0) return {};
  struct Magic {
    unsigned long magic;
    const char* name;
  };
  static constexpr Magic k_pseudo[] = {
      {0x9fa0, "proc"},        {0x62656572, "sysfs"},    {0x27e0eb, "cgroup"},        {0x63677270, "cgroup2"},
      {0x64626720, "debugfs"}, {0x74726163, "tracefs"},  {0x1cd1, "devpts"},          {0x73636673, "securityfs"},
      {0xcafe4a11, "bpf"},     {0x62656570, "configfs"}, {0x6165676c, "pstore"},      {0xde5e81e4, "efivarfs"},
      {0x19800202, "mqueue"},  {0x65735543, "fusectl"},  {0x42494e4d, "binfmt_misc"}, {0xf97cff8c, "selinuxfs"},
  };
  for (const auto& m : k_pseudo)
    if (static_cast<unsigned long>(sf.f_type) == m.magic)
      return input_error(what + ": " + path_or_glob + " is on " + m.name +
                         ", a kernel pseudo filesystem, not model files: give the files or directory of the model");
  return {};
}

Result<std::string> read_value(const fs::path& path) {
  SPARK_TRY(std::string text, read_file(path));
  return trim(text);
}

Result<void> write_value(const fs::path& path, const std::string& value) {
  // O_TRUNC as a shell's redirection does: the kernel files ignore it, fixture files need it.
  Fd f(::open(path.c_str(), O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC));
  if (f.get() < 0) return errno_error("opening " + path.string() + " for writing");
  ssize_t n;
  do {
    n = ::write(f.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno_error("writing '" + value + "' to " + path.string());
  if (static_cast<size_t>(n) != value.size())
    return sys_error(EIO, "short write of '" + value + "' to " + path.string());
  return {};
}

Result<void> atomic_write(const fs::path& path, const std::string& content, mode_t mode, Durability durability) {
  bool durable = durability == Durability::durable;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    return sys_error(ELOOP, "refusing to replace symlink " + path.string());
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  {
    Fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode));
    if (f.get() < 0) return errno_error("creating " + tmp.string());
    if (::fchmod(f.get(), mode) != 0) return errno_error("chmod " + tmp.string());
    size_t off = 0;
    while (off < content.size()) {
      ssize_t n = ::write(f.get(), content.data() + off, content.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        ::unlink(tmp.c_str());
        return sys_error(e, "writing " + tmp.string());
      }
      off += static_cast<size_t>(n);
    }
    if (durable && ::fsync(f.get()) != 0) {
      int e = errno;
      ::unlink(tmp.c_str());
      return sys_error(e, "fsync " + tmp.string());
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return sys_error(e, "renaming " + tmp.string() + " to " + path.string());
  }
  if (!durable) return {};
  return fsync_dir(path.parent_path().empty() ? fs::path(".") : path.parent_path());
}

Result<void> ensure_dir(const fs::path& path, mode_t mode) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) return sys_error(ELOOP, "refusing symlinked directory " + path.string());
    if (!S_ISDIR(st.st_mode)) return sys_error(ENOTDIR, path.string() + " is not a directory");
    return {};
  }
  if (path.has_parent_path() && path.parent_path() != path) {
    SPARK_TRY_VOID(ensure_dir(path.parent_path(), mode));
  }
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return errno_error("creating directory " + path.string());
  return {};
}

Result<void> remove_file(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("removing " + path.string());
  return {};
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    lines.emplace_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string normalize_ws(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : trim(s)) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = true;
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

Result<FileLock> FileLock::acquire(const fs::path& path) {
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_error("opening lock " + path.string());
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    int e = errno;
    return sys_error(e, "locking " + path.string());
  }
  return FileLock(std::move(fd));
}

}  // namespace spark
