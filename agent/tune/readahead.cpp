#include "tune/readahead.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>

#include "core/fs.h"

using spark::state::Target, spark::state::sysfs_target;

namespace spark::tune {

namespace {

// A device directory in sysfs (…/block/vda or …/block/vda/vda1) -> the device that has a queue.
Result<std::string> disk_of_sysfs_dir(const HostPaths& paths, const fs::path& dir, const std::string& what) {
  std::error_code ec;
  fs::path real = fs::canonical(dir, ec);
  if (ec) return sys_error(ec.value(), "resolving " + dir.string() + " for " + what);
  std::string name = real.filename().string();
  if (fs::exists(real / "partition", ec)) name = real.parent_path().filename().string();
  if (!fs::exists(paths.sys / "block" / name / "queue/read_ahead_kb", ec))
    return sys_error(ENODEV, what + " is on " + name + ", which has no queue/read_ahead_kb; name a disk with --device");
  return name;
}

}  // namespace

Result<std::string> readahead_device_of_file(const HostPaths& paths, const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return errno_error("stat " + file.string());
  unsigned maj = major(st.st_dev), min = minor(st.st_dev);
  if (maj == 0)
    return sys_error(ENODEV, file.string() +
                                 " is on a filesystem without a block device (tmpfs, overlay, NFS, "
                                 "btrfs); name the disk with --device");
  fs::path dev_dir = paths.sys / "dev/block" / (std::to_string(maj) + ":" + std::to_string(min));
  return disk_of_sysfs_dir(paths, dev_dir, file.string());
}

Result<std::string> readahead_device_by_name(const HostPaths& paths, const std::string& name) {
  std::string n = name;
  if (n.rfind("/dev/", 0) == 0) n = n.substr(5);
  if (n.empty() || n.find('/') != std::string::npos || n == "." || n == "..")
    return input_error("device '" + name + "' is not a block device name (vda, nvme0n1, /dev/sda1)");
  std::error_code ec;
  fs::path dir = paths.sys / "class/block" / n;
  if (!fs::exists(dir, ec)) return sys_error(ENODEV, "no block device '" + name + "' (see /sys/class/block)");
  return disk_of_sysfs_dir(paths, dir, "device " + name);
}

Result<std::vector<std::string>> readahead_devices_of_files(const HostPaths& paths,
                                                            const std::vector<fs::path>& files) {
  std::vector<std::string> out;
  for (const auto& f : files) {
    SPARK_TRY(std::string d, readahead_device_of_file(paths, f));
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
  }
  return out;
}

Target readahead_target(const std::string& device) { return sysfs_target("block/" + device + "/queue/read_ahead_kb"); }

Change readahead_change(const std::string& device, uint64_t kib, const std::string& reason) {
  return Change{readahead_target(device), std::to_string(kib), reason};
}

Result<uint64_t> read_readahead_kb(const HostPaths& paths, const std::string& device) {
  SPARK_TRY(std::string v, read_value(paths.sys / "block" / device / "queue/read_ahead_kb"));
  try {
    return static_cast<uint64_t>(std::stoull(v));
  } catch (...) {
    return sys_error(EIO, "read_ahead_kb of " + device + " is not a number: " + v);
  }
}

}  // namespace spark::tune
