// A private ftrace instance for counting tracepoint hits independently of BPF. When tracefs is not
// mounted, it is mounted on a temporary directory for the test's lifetime and unmounted after.
#pragma once

#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/fs.h"
#include "core/host_paths.h"

namespace spark::test {

class TracefsInstance {
 public:
  TracefsInstance(const HostPaths& paths, const std::string& name) {
    std::filesystem::path base = paths.tracefs;
    std::error_code ec;
    if (!std::filesystem::exists(base / "instances", ec)) {
      char tmpl[] = "/tmp/spark-tune-tracefs-XXXXXX";
      if (!::mkdtemp(tmpl)) {
        why_ = "mkdtemp failed";
        return;
      }
      mount_dir_ = tmpl;
      if (::mount("tracefs", tmpl, "tracefs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
        why_ = std::string("tracefs is not mounted and mounting it failed: ") + std::strerror(errno);
        return;
      }
      mounted_ = true;
      base = mount_dir_;
    }
    dir_ = base / "instances" / name;
    if (::mkdir(dir_.c_str(), 0755) != 0) {
      why_ = "cannot create ftrace instance " + dir_.string() + ": " + std::strerror(errno);
      dir_.clear();
      return;
    }
    ok_ = true;
  }
  ~TracefsInstance() {
    if (!dir_.empty()) {
      (void)write_value(dir_ / "events/enable", "0");
      ::rmdir(dir_.c_str());
    }
    if (mounted_) ::umount2(mount_dir_.c_str(), MNT_DETACH);
    if (!mount_dir_.empty()) ::rmdir(mount_dir_.c_str());
  }
  bool ok() const { return ok_; }
  const std::string& why() const { return why_; }
  Result<void> enable(const std::string& event, bool on) {
    return write_value(dir_ / "events" / event / "enable", on ? "1" : "0");
  }
  // Lines in the instance's trace buffer for the event name, and whether events were lost.
  Result<uint64_t> count(const std::string& event_name, bool* lost) {
    SPARK_TRY(std::string text, read_file(dir_ / "trace"));
    uint64_t n = 0;
    for (const auto& line : split_lines(text))
      if (!line.empty() && line[0] != '#' && line.find(" " + event_name + ":") != std::string::npos) ++n;
    *lost = false;
    for (const auto& e : std::filesystem::directory_iterator(dir_ / "per_cpu")) {
      auto stats = read_file(e.path() / "stats");
      if (!stats.ok()) continue;
      for (const auto& line : split_lines(*stats))
        if (line.rfind("overrun:", 0) == 0 && trim(line.substr(8)) != "0") *lost = true;
    }
    return n;
  }

 private:
  std::filesystem::path mount_dir_;
  std::filesystem::path dir_;
  std::string why_;
  bool mounted_ = false;
  bool ok_ = false;
};

}  // namespace spark::test
