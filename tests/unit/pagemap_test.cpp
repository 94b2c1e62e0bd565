// The present ranges of a mapping read two ways: the PAGEMAP_SCAN ioctl (Linux 6.7+) and pagemap's
// 8-byte entries (every kernel; what the keeper uses before 6.7, e.g. Debian 12's 6.1). They must
// agree, page for page, on a mapping with holes, at its edges and on a range cut inside it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "core/fd.h"
#include "tune/process_mappings.h"

using spark::tune::k_pagemap_slice, spark::tune::mapped_bytes, spark::tune::present_regions,
    spark::tune::present_regions_from_entries;

namespace spark {
namespace {

using Regions = std::vector<std::pair<uint64_t, uint64_t>>;

class PagemapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    // More pages than one read of entries covers (k_pagemap_slice), so the slices' seams are crossed.
    pages = k_pagemap_slice * 2 + 123;
    len = pages * page;
    map = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(map, MAP_FAILED);
    ::madvise(map, len, MADV_NOHUGEPAGE);  // 4 KiB pages: the holes stay holes
    base = reinterpret_cast<uint64_t>(map);
    fd = Fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    ASSERT_GE(fd.get(), 0);
  }
  void TearDown() override {
    if (map && map != MAP_FAILED) ::munmap(map, len);
  }
  void touch(uint64_t first, uint64_t count) {
    for (uint64_t i = first; i < first + count && i < pages; ++i) static_cast<volatile char*>(map)[i * page] = 1;
  }
  Regions expected(const std::vector<std::pair<uint64_t, uint64_t>>& touched_pages) const {
    Regions r;
    for (auto [first, count] : touched_pages) r.push_back({base + first * page, base + (first + count) * page});
    return r;
  }

  uint64_t page = 0, pages = 0, len = 0, base = 0;
  void* map = nullptr;
  Fd fd;
};

TEST_F(PagemapTest, EntriesGiveThePresentRangesMerged) {
  // A run at the start, a single page, a run across the first slice's seam, the last page.
  const std::vector<std::pair<uint64_t, uint64_t>> runs{{0, 10}, {40, 1}, {k_pagemap_slice - 5, 11}, {pages - 1, 1}};
  for (auto [first, count] : runs) touch(first, count);
  auto r = present_regions_from_entries(fd.get(), base, base + len);
  ASSERT_TRUE(r.ok()) << r.error().what();
  EXPECT_EQ(*r, expected(runs));
  // A range cut inside runs: clipped to it.
  auto cut = present_regions_from_entries(fd.get(), base + 5 * page, base + (k_pagemap_slice - 2) * page);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(*cut, (Regions{{base + 5 * page, base + 10 * page},
                           {base + 40 * page, base + 41 * page},
                           {base + (k_pagemap_slice - 5) * page, base + (k_pagemap_slice - 2) * page}}));
  // Paged out (MADV_DONTNEED on anonymous memory): not present any more.
  ASSERT_EQ(::madvise(static_cast<char*>(map) + 40 * page, page, MADV_DONTNEED), 0);
  auto after = present_regions_from_entries(fd.get(), base, base + 100 * page);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, (Regions{{base, base + 10 * page}}));
}

TEST_F(PagemapTest, EntriesAgreeWithPagemapScan) {
  for (uint64_t i = 0; i < pages; i += 7) touch(i, 1 + i % 5);
  auto scan = present_regions(fd.get(), base, base + len);
  ASSERT_TRUE(scan);
  ASSERT_TRUE(scan->ok()) << scan->error().what();
  auto entries = present_regions_from_entries(fd.get(), base, base + len);
  ASSERT_TRUE(entries.ok()) << entries.error().what();
  EXPECT_EQ(**scan, *entries);
  EXPECT_GT(entries->size(), 100u);
  auto bytes = mapped_bytes(fd.get(), base, base + len);
  ASSERT_TRUE(bytes && bytes->ok());
  uint64_t sum = 0;
  for (auto [a, b] : *entries) sum += b - a;
  EXPECT_EQ(**bytes, sum);
}

}  // namespace
}  // namespace spark
