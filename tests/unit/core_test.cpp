#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "core/fs.h"
#include "core/log_sink.h"
#include "core/result.h"
#include "core/units.h"
#include "support/fixture.h"

namespace spark {
namespace {

TEST(Units, ParsesSizesWithBinaryUnits) {
  EXPECT_EQ(*parse_size("5G"), 5ull << 30);
  EXPECT_EQ(*parse_size("512MiB"), 512ull << 20);
  EXPECT_EQ(*parse_size("8k"), 8192u);
  EXPECT_EQ(*parse_size("1.5 GB"), 3ull << 29);
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_FALSE(parse_size("lots").ok());
  EXPECT_FALSE(parse_size("5X").ok());
  EXPECT_FALSE(parse_size("-1G").ok());
  EXPECT_NE(std::string(parse_size("5X").error().what()).find("unknown size unit"), std::string::npos);
}

// The agent logs to the journal only when its stderr IS the journal stream systemd gave it: a
// child started inside a unit (the tests in the VM guests' vmtest.service) with stderr on a pipe
// inherited JOURNAL_STREAM and INVOCATION_ID, logged to the journal, and its reader saw nothing.
TEST(Log, JournalOnlyWhenStderrIsTheJournalStream) {
  FILE* a = std::tmpfile();
  FILE* b = std::tmpfile();
  ASSERT_TRUE(a && b);
  struct stat st {};
  ASSERT_EQ(::fstat(::fileno(a), &st), 0);
  std::string stream = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  EXPECT_EQ(log_sink_for_stderr(stream.c_str(), ::fileno(a)), LogSink::journal);
  EXPECT_EQ(log_sink_for_stderr(stream.c_str(), ::fileno(b)), LogSink::stderr_text) << "inherited, stderr elsewhere";
  EXPECT_EQ(log_sink_for_stderr(nullptr, ::fileno(a)), LogSink::stderr_text);
  EXPECT_EQ(log_sink_for_stderr("", ::fileno(a)), LogSink::stderr_text);
  EXPECT_EQ(log_sink_for_stderr("garbage", ::fileno(a)), LogSink::stderr_text);
  EXPECT_EQ(log_sink_for_stderr((stream + "x").c_str(), ::fileno(a)), LogSink::stderr_text);
  EXPECT_EQ(log_sink_for_stderr(stream.c_str(), -1), LogSink::stderr_text);
  std::fclose(a);
  std::fclose(b);
}

TEST(Units, ParsesDurations) {
  EXPECT_EQ(parse_duration("100ms")->count(), 100);
  EXPECT_EQ(parse_duration("180s")->count(), 180000);
  EXPECT_EQ(parse_duration("3m")->count(), 180000);
  EXPECT_EQ(parse_duration("2")->count(), 2000);
  EXPECT_FALSE(parse_duration("soon").ok());
  EXPECT_FALSE(parse_duration("5d").ok());
}

TEST(Units, ParsesPercentages) {
  auto p = parse_percentage("4% of ram");
  ASSERT_TRUE(p);
  EXPECT_DOUBLE_EQ(p->percent, 4);
  EXPECT_EQ(p->base, "ram");
  EXPECT_EQ(parse_percentage("30% of Available")->base, "available");
  EXPECT_EQ(parse_percentage("10%")->base, "");
  EXPECT_FALSE(parse_percentage("10"));
  EXPECT_FALSE(parse_percentage("10% ram"));
}

TEST(Units, FormatsSizes) {
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(5ull << 30), "5.0 GiB");
}

TEST(Result, CarriesContextAndErrno) {
  Result<int> r = sys_error(EINVAL, "writing vm.min_free_kbytes");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), EINVAL);
  EXPECT_EQ(std::string(r.error().what()), "writing vm.min_free_kbytes: Invalid argument");
  auto wrapped = with_context(r.error(), "applying dgx-spark");
  EXPECT_EQ(std::string(wrapped.what()), "applying dgx-spark: writing vm.min_free_kbytes: Invalid argument");
}

TEST(Fs, AtomicWriteRefusesSymlinkAndReplacesFile) {
  test::FixtureRoot root;
  auto target = root.root() / "state.json";
  ASSERT_TRUE(atomic_write(target, "one", 0600).ok());
  ASSERT_TRUE(atomic_write(target, "two", 0600).ok());
  EXPECT_EQ(*read_file(target), "two");
  EXPECT_EQ(fs::status(target).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  fs::create_symlink(root.root() / "elsewhere", root.root() / "link.json");
  auto r = atomic_write(root.root() / "link.json", "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), ELOOP);
  EXPECT_FALSE(fs::exists(root.root() / "elsewhere"));
}

TEST(Fs, WriteValueNeverCreatesAndRefusesSymlink) {
  test::FixtureRoot root;
  EXPECT_FALSE(write_value(root.root() / "absent", "1").ok());
  EXPECT_FALSE(fs::exists(root.root() / "absent"));
  root.write("real", "0\n");
  fs::create_symlink(root.root() / "real", root.root() / "link");
  EXPECT_FALSE(write_value(root.root() / "link", "1").ok());
  EXPECT_EQ(root.read("real"), "0\n");
}

TEST(Fs, NormalizesWhitespace) { EXPECT_EQ(normalize_ws("  4096\t16384   4194304\n"), "4096 16384 4194304"); }

}  // namespace
}  // namespace spark
