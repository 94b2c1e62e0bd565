// The keeper's reads (tune/file_reads.h): the step one readahead(2) reads whole, from a fixture
// sysfs, and the reader thread on files of the fixture root.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>

#include "support/fixture.h"
#include "tune/file_reads.h"

using spark::tune::FileReader, spark::tune::k_default_read_step, spark::tune::k_max_read_step,
    spark::tune::read_file_range, spark::tune::read_step_of_device;

namespace spark {
namespace {

namespace fs = std::filesystem;

// sys/dev/block/MAJ:MIN is a link to the device's directory, as in sysfs.
void device(const test::FixtureRoot& root, const std::string& majmin, const std::string& dir) {
  fs::create_directories(root.root() / "sys/dev/block");
  fs::create_directory_symlink(fs::path("../..") / dir, root.root() / "sys/dev/block" / majmin);
}

TEST(ReadStep, IsTheDevicesMaxSectorsAPartitionsItsDisksAndAtMostTheCap) {
  test::FixtureRoot root;
  root.write("sys/devices/virtio1/block/vda/queue/max_sectors_kb", "1280\n");
  root.write("sys/devices/virtio1/block/vda/vda1/partition", "1\n");
  root.write("sys/devices/pci/nvme/block/nvme0n1/queue/max_sectors_kb", "32767\n");
  root.write("sys/devices/virtual/block/loop0/queue/max_sectors_kb", "many\n");
  device(root, "254:0", "devices/virtio1/block/vda");
  device(root, "254:1", "devices/virtio1/block/vda/vda1");
  device(root, "259:0", "devices/pci/nvme/block/nvme0n1");
  device(root, "7:0", "devices/virtual/block/loop0");
  const auto& p = root.paths();
  EXPECT_EQ(read_step_of_device(p, makedev(254, 0)), 1280u << 10);
  EXPECT_EQ(read_step_of_device(p, makedev(254, 1)), 1280u << 10) << "a partition reads in its disk's step";
  EXPECT_EQ(read_step_of_device(p, makedev(259, 0)), k_max_read_step);
  EXPECT_EQ(read_step_of_device(p, makedev(7, 0)), k_default_read_step) << "unreadable: the default";
  EXPECT_EQ(read_step_of_device(p, makedev(8, 0)), k_default_read_step) << "not in sysfs: the default";
  EXPECT_EQ(read_step_of_device(p, makedev(0, 42)), k_default_read_step) << "no block device: the default";
}

TEST(ReadFileRange, AsksEveryStepAndStopsWhenToldOrOnAFileItCannotRead) {
  test::FixtureRoot root;
  root.write("f", std::string(64 << 10, 'x'));
  int fd = ::open((root.root() / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(read_file_range(fd, 0, 64 << 10, 4096), 64u << 10);
  EXPECT_EQ(read_file_range(fd, 4096, 10000, 4096), 10000u) << "the last step is what is left";
  std::atomic<bool> stop{true};
  EXPECT_EQ(read_file_range(fd, 0, 64 << 10, 4096, &stop), 0u);
  ::close(fd);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  EXPECT_EQ(read_file_range(p[0], 0, 64 << 10, 4096), 0u) << "readahead(2) of a pipe fails: nothing asked";
  ::close(p[0]);
  ::close(p[1]);
}

TEST(FileReader, MakesTheReadsAskedOnItsOwnThreadAndStopsWhenDestroyed) {
  test::FixtureRoot root;
  root.write("f", std::string(256 << 10, 'x'));
  FileReader reader(root.paths(), 4);
  EXPECT_TRUE(reader.idle());
  reader.ask({1, 0}, Fd(::open((root.root() / "f").c_str(), O_RDONLY | O_CLOEXEC)), 0, 256 << 10);
  reader.ask({2, 0}, Fd(::open((root.root() / "f").c_str(), O_RDONLY | O_CLOEXEC)), 4096, 8192);
  reader.ask({3, 0}, Fd(), 0, 4096);  // nothing to read: ignored
  ASSERT_TRUE(test::eventually([&] { return reader.idle(); }));
  EXPECT_EQ(reader.bytes_read(), (256u << 10) + 8192u);
  EXPECT_EQ(reader.dropped(), 0u);
}

TEST(FileReader, EveryReadAskedIsMadeOrDroppedAndTheLastAskedIsMade) {
  test::FixtureRoot root;
  root.write("f", std::string(64 << 10, 'x'));
  auto fd = [&] { return Fd(::open((root.root() / "f").c_str(), O_RDONLY | O_CLOEXEC)); };
  FileReader reader(root.paths(), 2);
  // Many asks for one key (each replaces the one pending), then many keys past the bound (each
  // drops the oldest pending): whatever the thread's pace, every read asked is either made or
  // counted dropped, and the reader ends idle. (The bound itself holds by construction: ask()
  // drops before it appends.)
  for (int i = 0; i < 100; ++i) reader.ask({1, 0}, fd(), 0, 4096);
  ASSERT_TRUE(test::eventually([&] { return reader.idle(); }));
  EXPECT_EQ(reader.bytes_read() / 4096 + reader.dropped(), 100u);
  EXPECT_GE(reader.bytes_read(), 4096u) << "the last read asked is made";
  for (int i = 0; i < 100; ++i) reader.ask({static_cast<pid_t>(i + 10), 0}, fd(), 0, 4096);
  ASSERT_TRUE(test::eventually([&] { return reader.idle(); }));
  EXPECT_EQ(reader.bytes_read() / 4096 + reader.dropped(), 200u);
}

}  // namespace
}  // namespace spark
