#include "telemetry/psi.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "core/fs.h"

namespace spark::telemetry {

namespace {

Result<PsiLine> parse_psi_line(const std::string& rest, const std::string& line) {
  PsiLine p;
  unsigned long long total = 0;
  if (std::sscanf(rest.c_str(), " avg10=%lf avg60=%lf avg300=%lf total=%llu", &p.avg10, &p.avg60, &p.avg300, &total) !=
      4)
    return input_error("pressure: expected \"avg10=.. avg60=.. avg300=.. total=..\": \"" + line + "\"");
  p.total_us = total;
  return p;
}

}  // namespace

Result<Psi> parse_psi(const std::string& text) {
  Psi psi;
  bool have_some = false;
  for (const auto& line : split_lines(text)) {
    if (line.rfind("some ", 0) == 0) {
      SPARK_TRY(psi.some, parse_psi_line(line.substr(4), line));
      have_some = true;
    } else if (line.rfind("full ", 0) == 0) {
      SPARK_TRY(PsiLine full, parse_psi_line(line.substr(4), line));
      psi.full = full;
    }
  }
  if (!have_some) return input_error("pressure file has no \"some\" line");
  return psi;
}

Result<Psi> read_psi(const std::filesystem::path& file) { return read_parsed(file, parse_psi); }

Result<PsiTrigger> PsiTrigger::create(const std::filesystem::path& pressure_file, PsiKind kind,
                                      std::chrono::microseconds stall, std::chrono::microseconds window) {
  if (stall.count() <= 0 || stall > window)
    return input_error("PSI trigger: the stall threshold must be positive and no longer than the window");
  Fd owned(::open(pressure_file.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!owned.valid()) return errno_error("opening " + pressure_file.string() + " for a PSI trigger");
  int fd = owned.get();
  PsiTrigger t(std::move(owned));
  // Only the kernel's pressure files take triggers; a regular file (a fixture tree) would just be
  // overwritten.
  struct statfs sfs {};
  if (::fstatfs(fd, &sfs) != 0) return errno_error("statfs " + pressure_file.string());
  if (sfs.f_type != PROC_SUPER_MAGIC && sfs.f_type != CGROUP2_SUPER_MAGIC)
    return sys_error(ENOTSUP, pressure_file.string() + " is not a kernel pressure file (procfs or cgroup2)");
  std::string spec = std::string(kind == PsiKind::some ? "some " : "full ") + std::to_string(stall.count()) + " " +
                     std::to_string(window.count());
  // The kernel wants the terminating NUL inside the write.
  ssize_t n = ::write(fd, spec.c_str(), spec.size() + 1);
  if (n < 0) {
    int err = errno;
    std::string what = "writing PSI trigger \"" + spec + "\" to " + pressure_file.string();
    if (err == EINVAL) what += " (the window must be 0.5-10 s, and a multiple of 2 s without CAP_SYS_RESOURCE)";
    return sys_error(err, what);
  }
  return t;
}

Result<bool> PsiTrigger::wait(std::chrono::milliseconds timeout) const {
  pollfd p{fd_.get(), POLLPRI, 0};
  for (;;) {
    int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("polling PSI trigger");
    }
    if (n == 0) return false;
    if (p.revents & POLLERR) return sys_error(ENODEV, "PSI trigger: pressure file went away");
    return (p.revents & POLLPRI) != 0;
  }
}

}  // namespace spark::telemetry
