// Fixture trees for unit tests: a temp directory laid out like a host (proc, sys, state), removed at the end.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include "core/host_paths.h"

namespace spark::test {

namespace fs = std::filesystem;

class FixtureRoot {
 public:
  FixtureRoot();
  ~FixtureRoot();
  FixtureRoot(const FixtureRoot&) = delete;
  FixtureRoot& operator=(const FixtureRoot&) = delete;

  const fs::path& root() const { return root_; }
  const HostPaths& paths() const { return paths_; }
  // Write a file under the root, creating directories ("proc/sys/vm/dirty_ratio", "10\n").
  void write(const std::string& relative, const std::string& content) const;
  std::string read(const std::string& relative) const;
  // A /proc/meminfo with the given totals in KiB (others derived).
  void meminfo(uint64_t total_kb, uint64_t available_kb) const;

 private:
  fs::path root_;
  HostPaths paths_;
};

// Copies a file from tests/fixtures into the root at the given relative path.
void copy_fixture(const FixtureRoot& root, const std::string& fixture, const std::string& relative);

// Skips the current test unless running as root with the capability described.
bool is_root();

// What this process (all its threads) has asked of block devices so far: /proc/self/io
// read_bytes, counted when a read is submitted; nullopt without the kernel's task I/O accounting.
// A test judges a read by it where residency cannot tell: a host may take clean page cache back
// at any time (the dev and CI VMs page out cold memory with DAMON, counted nowhere).
std::optional<uint64_t> process_read_bytes();

// How much slower than this build machine the tests run: SPARK_TUNE_TEST_TIME_SCALE (1 to 20,
// default 1). The QEMU guests (TCG, an emulated CPU) set it; a test that bounds a latency scales
// its bound by it, and one that watches a short period from outside skips with the reason.
int time_scale();

// Polls `cond` every `step` until it holds or `limit` has passed; returns its last answer. Tests
// wait on a condition this way, never on a fixed sleep.
template <typename F>
bool eventually(F cond, std::chrono::milliseconds limit = std::chrono::seconds(10),
                std::chrono::milliseconds step = std::chrono::milliseconds(2)) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(step);
  }
  return cond();
}

}  // namespace spark::test
