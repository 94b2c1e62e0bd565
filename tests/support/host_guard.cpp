#include "support/host_guard.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "core/fs.h"
#include "tune/actuator.h"

extern char** environ;

namespace spark::test {

KernelValueGuard::KernelValueGuard(const std::vector<std::string>& files) {
  for (const auto& f : files) {
    auto v = read_value(f);
    if (v) saved_[f] = *v;
  }
}

KernelValueGuard::~KernelValueGuard() {
  // Twice: coupled keys (dirty_ratio / dirty_bytes) zero each other, and the second pass settles them.
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& [f, v] : saved_) {
      std::string want = normalize_value(v);
      if (kernel_value(f) == want) continue;
      if (want == "0" && (f.ends_with("dirty_bytes") || f.ends_with("dirty_background_bytes"))) continue;
      (void)write_value(f, want);
    }
}

std::string KernelValueGuard::original(const std::string& file) const {
  auto it = saved_.find(file);
  return it == saved_.end() ? "" : normalize_value(it->second);
}

std::vector<std::string> profile_kernel_files() {
  std::vector<std::string> files;
  for (const char* k : {"min_free_kbytes", "watermark_scale_factor", "vfs_cache_pressure", "dirty_ratio",
                        "dirty_background_ratio", "dirty_bytes", "dirty_background_bytes", "dirty_expire_centisecs",
                        "dirty_writeback_centisecs", "swappiness", "compaction_proactiveness", "extfrag_threshold",
                        "overcommit_memory", "zone_reclaim_mode", "page-cluster"})
    files.push_back(std::string("/proc/sys/vm/") + k);
  files.push_back("/sys/kernel/mm/transparent_hugepage/enabled");
  files.push_back("/sys/kernel/mm/transparent_hugepage/defrag");
  return files;
}

std::string kernel_value(const std::string& file) {
  auto v = read_value(file);
  return v ? normalize_value(*v) : "";
}

namespace {
std::string drain(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}
}  // namespace

ProcessResult run_spark_tune(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  char out_tmpl[] = "/tmp/spark-out-XXXXXX";
  char err_tmpl[] = "/tmp/spark-err-XXXXXX";
  int out_fd = ::mkstemp(out_tmpl), err_fd = ::mkstemp(err_tmpl);
  ::unlink(out_tmpl);
  ::unlink(err_tmpl);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::close(0);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv;
    std::string bin = SPARK_TUNE_BINARY;
    argv.push_back(bin.data());
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ProcessResult r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  ::lseek(out_fd, 0, SEEK_SET);
  ::lseek(err_fd, 0, SEEK_SET);
  r.out = drain(out_fd);
  r.err = drain(err_fd);
  ::close(out_fd);
  ::close(err_fd);
  return r;
}

}  // namespace spark::test
