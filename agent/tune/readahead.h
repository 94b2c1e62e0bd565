// Readahead throttle: which block device reads a file's pages, and the sysfs target that sets its
// readahead. Changes go through the Tuner (journal first) as sysfs "block/<disk>/queue/read_ahead_kb".
//
// Which device: readahead is decided in the page cache, per open file, from the backing_dev_info of
// the filesystem the file lives on (file_ra_state_init copies bdi->ra_pages at open(2)). So:
//  - a partition resolves to its whole disk (partitions share the disk's queue; only the disk has
//    queue/read_ahead_kb);
//  - device-mapper/LVM (dm-N) is throttled itself: its own queue/read_ahead_kb is what the
//    filesystem's reads use; the slaves below only see the bios dm sends and do no readahead of
//    their own for these files, so they are left alone;
//  - a loop device is throttled itself for the same reason. The loop driver reads its backing file
//    through a file it opened long ago, whose readahead state was fixed at that open, so changing
//    the backing disk would not change that stream and would slow every other reader of that disk.
//  - a file on a filesystem with no block device (tmpfs, overlayfs, NFS, btrfs anon dev) has none:
//    the caller is told to name one with --device.
// Because the value is copied at open(2), a window must begin before the loader opens its files
// (`spark-tune run` does so; with `window begin`, begin it before starting the loader).
#pragma once

#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "tune/tuner.h"

namespace spark::tune {

// The block device ("vda", "loop3", "dm-0") whose readahead governs reads of the file.
Result<std::string> readahead_device_of_file(const HostPaths& paths, const fs::path& file);
// A device given by the user: "vda", "/dev/vda", "vda1" (resolved to vda); must exist in sysfs.
Result<std::string> readahead_device_by_name(const HostPaths& paths, const std::string& name);
// The devices behind a set of files, each once, in first-seen order.
Result<std::vector<std::string>> readahead_devices_of_files(const HostPaths& paths, const std::vector<fs::path>& files);

// The sysfs target "block/<dev>/queue/read_ahead_kb".
state::Target readahead_target(const std::string& device);
// The Change that sets a device's readahead to kib KiB.
Change readahead_change(const std::string& device, uint64_t kib, const std::string& reason);
// Current readahead of a device in KiB.
Result<uint64_t> read_readahead_kb(const HostPaths& paths, const std::string& device);

}  // namespace spark::tune
