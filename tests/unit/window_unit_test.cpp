#include <gtest/gtest.h>

#include <filesystem>

#include "core/proc_stat.h"
#include "support/fixture.h"
#include "tune/page_cache.h"
#include "tune/readahead.h"
#include "window/window.h"

using spark::tune::CacheKeeperOptions, spark::tune::CacheMode, spark::tune::expand_files,
    spark::tune::read_readahead_kb, spark::tune::readahead_device_by_name, spark::tune::readahead_target;

using spark::window::MappedBudget, spark::window::WindowRecord, spark::window::WindowSpec,
    spark::window::auto_mapped_budget, spark::window::parse_mapped_budget, spark::window::record_from_json,
    spark::window::record_to_json, spark::window::spec_from_json, spark::window::spec_to_json;

namespace spark {
namespace {

namespace fs = std::filesystem;

// sysfs as the kernel lays it out: /sys/class/block/<name> -> devices/.../block/<disk>[/<part>].
void add_disk(const test::FixtureRoot& root, const std::string& disk, const std::string& part = "") {
  std::string base = "sys/devices/virtual/block/" + disk;
  root.write(base + "/queue/read_ahead_kb", "128\n");
  root.write(base + "/dev", "8:0\n");
  fs::create_directories(root.root() / "sys/block");
  fs::create_directories(root.root() / "sys/class/block");
  if (!fs::exists(root.root() / "sys/block" / disk))
    fs::create_directory_symlink("../devices/virtual/block/" + disk, root.root() / "sys/block" / disk);
  if (!fs::exists(root.root() / "sys/class/block" / disk))
    fs::create_directory_symlink("../../devices/virtual/block/" + disk, root.root() / "sys/class/block" / disk);
  if (!part.empty()) {
    root.write(base + "/" + part + "/partition", "1\n");
    fs::create_directory_symlink("../../devices/virtual/block/" + disk + "/" + part,
                                 root.root() / "sys/class/block" / part);
  }
}

// auto: MemAvailable - the files - 10% of MemTotal, never below 0.
TEST(MappedBudget, AutoLeavesRoomForTheFilesAndAReserve) {
  test::FixtureRoot root;
  const uint64_t gib = 1ull << 30;
  root.meminfo(128ull << 20, 110ull << 20);  // a 128 GiB unified-memory host, 110 GiB available
  EXPECT_EQ(*auto_mapped_budget(root.paths(), 4 * gib), 110 * gib - 4 * gib - 128 * gib / 10);
  EXPECT_EQ(*auto_mapped_budget(root.paths(), 70 * gib), 110 * gib - 70 * gib - 128 * gib / 10);
  EXPECT_EQ(*auto_mapped_budget(root.paths(), 100 * gib), 0u)
      << "a model as large as what is free: page out as it loads";
  root.meminfo(16ull << 20, 6ull << 20);
  EXPECT_EQ(*auto_mapped_budget(root.paths(), 8 * gib), 0u);
  EXPECT_FALSE(auto_mapped_budget(test::FixtureRoot().paths(), gib).ok()) << "no meminfo: an error, not a guess";
}

TEST(MappedBudget, ParsesAutoAndSizesRefusesTheRest) {
  EXPECT_EQ(*parse_mapped_budget("auto"), std::nullopt);
  EXPECT_EQ(*parse_mapped_budget("0"), std::optional<uint64_t>(0));
  EXPECT_EQ(*parse_mapped_budget("8G"), std::optional<uint64_t>(8ull << 30));
  auto spec = spec_from_json(nlohmann::json{{"mapped_budget", "auto"}});
  ASSERT_TRUE(spec.ok());
  ASSERT_TRUE(spec->mapped_budget.has_value()) << "auto was asked for";
  EXPECT_EQ(spec->mapped_budget->bytes, std::nullopt) << "auto carries no size";
  EXPECT_EQ(spec_from_json(nlohmann::json{{"mapped_budget", 1024}})->mapped_budget->bytes,
            std::optional<uint64_t>(1024));
  EXPECT_FALSE(spec_from_json(nlohmann::json{{"mapped_budget", "lots"}}).ok());
  auto bad = parse_mapped_budget("lots");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(describe(bad.error()).find("auto or a size"), std::string::npos) << describe(bad.error());
}

// --read-ahead: carried by the spec and the record (a recovered window reads ahead as begun);
// above 1 GiB it is refused, not clamped.
TEST(ReadAhead, SpecAndRecordCarryItAndAGigabyteIsTheMost) {
  auto spec = spec_from_json(nlohmann::json{{"read_ahead", 0}});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->read_ahead, std::optional<uint64_t>(0)) << "off was asked for";
  EXPECT_EQ(spec_from_json(nlohmann::json::object())->read_ahead, std::nullopt);
  EXPECT_EQ(spec_to_json(*spec).at("read_ahead").get<uint64_t>(), 0u);
  auto big = spec_from_json(nlohmann::json{{"read_ahead", (1ull << 30) + 1}});
  ASSERT_FALSE(big.ok());
  EXPECT_NE(describe(big.error()).find("up to 1G"), std::string::npos) << describe(big.error());
  WindowRecord r;
  r.id = "w1";
  r.read_ahead = 8ull << 20;
  auto back = record_from_json(record_to_json(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->read_ahead, 8ull << 20);
  auto j = record_to_json(r);
  j.erase("read_ahead");  // a record written before --read-ahead existed
  EXPECT_EQ(record_from_json(j)->read_ahead, CacheKeeperOptions{}.read_ahead);
}

TEST(Readahead, PartitionResolvesToDiskDmAndLoopToThemselves) {
  test::FixtureRoot root;
  add_disk(root, "nvme0n1", "nvme0n1p2");
  add_disk(root, "dm-0");
  add_disk(root, "loop4");
  EXPECT_EQ(*readahead_device_by_name(root.paths(), "nvme0n1p2"), "nvme0n1");
  EXPECT_EQ(*readahead_device_by_name(root.paths(), "/dev/nvme0n1"), "nvme0n1");
  EXPECT_EQ(*readahead_device_by_name(root.paths(), "dm-0"), "dm-0");
  EXPECT_EQ(*readahead_device_by_name(root.paths(), "loop4"), "loop4");
  EXPECT_FALSE(readahead_device_by_name(root.paths(), "sdz").ok());
  EXPECT_FALSE(readahead_device_by_name(root.paths(), "../../etc").ok());
  EXPECT_EQ(readahead_target("nvme0n1").name, "block/nvme0n1/queue/read_ahead_kb");
  EXPECT_EQ(*read_readahead_kb(root.paths(), "nvme0n1"), 128u);
}

TEST(WindowSpecJson, ValidatesAndRoundTrips) {
  WindowSpec s;
  s.files = {"/models/a/*.safetensors"};
  s.readahead_kb = 256;
  s.cache = CacheMode::evict;
  s.ttl = std::chrono::milliseconds(90'000);
  s.pid = 42;
  s.until_port = "127.0.0.1:8000";
  auto back = spec_from_json(spec_to_json(s));
  ASSERT_TRUE(back.ok()) << describe(back.error());
  EXPECT_EQ(back->files, s.files);
  EXPECT_EQ(*back->readahead_kb, 256u);
  EXPECT_EQ(*back->cache, CacheMode::evict);
  EXPECT_EQ(back->ttl->count(), 90'000);
  EXPECT_EQ(back->pid, 42);
  EXPECT_FALSE(spec_from_json({{"ttl_ms", 0}}).ok());
  EXPECT_FALSE(spec_from_json({{"ttl_ms", -5}}).ok());
  EXPECT_FALSE(spec_from_json({{"cache", "maybe"}}).ok());
  EXPECT_FALSE(spec_from_json({{"until_port", "localhost"}}).ok());
  EXPECT_FALSE(spec_from_json({{"until_port", "localhost:99999"}}).ok());
  EXPECT_FALSE(spec_from_json({{"files", "notalist"}}).ok());
  EXPECT_FALSE(spec_from_json({{"overlay", {{{"key", "../x"}, {"value", "1"}}}}}).ok());
}

TEST(WindowRecordJson, RoundTrips) {
  WindowRecord r;
  r.id = "w7";
  r.files = {"/m/a"};
  r.devices = {"vda"};
  r.readahead_kb = 128;
  r.cache = CacheMode::drop;
  r.deadline_ms = 123456;
  r.pid = 9;
  r.pid_start = 77;
  auto back = record_from_json(record_to_json(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->id, "w7");
  EXPECT_EQ(back->cache, CacheMode::drop);
  EXPECT_EQ(back->pid_start, 77u);
  EXPECT_FALSE(record_from_json(nlohmann::json{{"files", 1}}).ok());
}

TEST(ExpandFiles, DirectoriesGlobsAndMissing) {
  test::FixtureRoot root;
  root.write("models/a/1.safetensors", "x");
  root.write("models/a/2.safetensors", "y");
  root.write("models/a/sub/3.bin", "z");
  auto dir = expand_files({(root.root() / "models/a").string()});
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(dir->size(), 3u);
  auto glob = expand_files(
      {(root.root() / "models/a/*.safetensors").string(), (root.root() / "models/a/1.safetensors").string()});
  ASSERT_TRUE(glob.ok());
  EXPECT_EQ(glob->size(), 2u);  // each file once
  auto missing = expand_files({(root.root() / "models/nope*").string()});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.error().what()).find("nope"), std::string::npos);
}

TEST(ProcessStartTime, ParsesCommWithSpacesAndParens) {
  test::FixtureRoot root;
  root.write(
      "proc/55/stat",
      "55 (my (odd) proc) S 1 55 55 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615\n");
  auto st = read_proc_stat(root.paths(), 55);
  ASSERT_TRUE(st.ok()) << describe(st.error());
  EXPECT_EQ(st->start_time, 987654u);
  EXPECT_TRUE(process_alive(root.paths(), 55, 987654));
  EXPECT_FALSE(process_alive(root.paths(), 55, 1));
  EXPECT_FALSE(process_alive(root.paths(), 56, 987654));
}

}  // namespace
}  // namespace spark
