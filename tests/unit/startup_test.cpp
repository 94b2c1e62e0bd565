// Issue 12, defect 4: a verb's start does only that verb's work. `spark-tune --version` took
// 10-27 ms where /bin/true takes 3-5 ms; most of spark-tune's own share was building every verb's
// CLI11 parser. Time on a shared CI host is no test, so the work is counted: malloc calls of the
// whole process (tests/alloc_count, preloaded), which are the same at every run.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <regex>

#include "cli/verb_choice.h"
#include "core/fs.h"
#include "support/run_spark_tune.h"

namespace spark {
namespace {

// malloc calls of `spark-tune args...`; -1 when it failed.
long allocations(const std::vector<std::string>& args, std::string* out = nullptr) {
  std::string file = "/tmp/spark-alloc-count-" + std::to_string(::getpid());
  ::unlink(file.c_str());
  auto r = test::run_spark_tune(args, {std::string("LD_PRELOAD=") + ALLOC_COUNT_LIB, "ALLOC_COUNT_FILE=" + file});
  if (out) *out = r.out;
  std::ifstream in(file);
  long n = -1;
  if (!(in >> n)) n = -1;
  ::unlink(file.c_str());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return n;
}

// The verbs `spark-tune --help` lists.
std::vector<std::string> listed_verbs() {
  auto r = test::run_spark_tune({"--help"});
  std::vector<std::string> verbs;
  bool in_list = false;
  for (const auto& line : split_lines(r.out)) {
    if (line.rfind("Subcommands:", 0) == 0) {
      in_list = true;
      continue;
    }
    std::smatch m;
    if (in_list && std::regex_match(line, m, std::regex(R"(^  ([a-z]+)\b.*)"))) verbs.push_back(m[1]);
  }
  return verbs;
}

TEST(Startup, VersionBuildsNoVerbAndAVerbOnlyItself) {
  long all = allocations({"--help"});
  long version = allocations({"--version"});
  long one = allocations({"status", "--help"});
  ASSERT_GT(all, 0) << "the malloc counter did not report (LD_PRELOAD " << ALLOC_COUNT_LIB << ")";
  ASSERT_GT(version, 0);
  std::printf("malloc calls: --help (every verb) %ld, --version %ld, status --help %ld\n", all, version, one);
  // Building every verb's parser is most of what --help allocates; --version and one verb do
  // a small part of it.
  EXPECT_LT(version * 5, all) << "--version builds the verbs' command lines";
  EXPECT_LT(one * 3, all) << "`status --help` builds every verb's command line";
}

TEST(Startup, EveryVerbsHelpStillWorks) {
  auto verbs = listed_verbs();
  ASSERT_GE(verbs.size(), 14u) << "spark-tune --help lists too few verbs";
  for (const auto& v : verbs) {
    auto r = test::run_spark_tune({v, "--help"});
    EXPECT_EQ(r.exit_code, 0) << v << ": " << r.err;
    EXPECT_NE(r.out.find(v), std::string::npos) << v << " --help: " << r.out;
  }
  // Global options before the verb, and a verb's own subcommand.
  auto g = test::run_spark_tune({"--json", "--state-dir", "/nonexistent", "window", "begin", "--help"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_NE(g.out.find("--files"), std::string::npos) << g.out;
  // Mistakes still get CLI11's messages.
  auto unknown = test::run_spark_tune({"aply"});
  EXPECT_NE(unknown.exit_code, 0);
  auto none = test::run_spark_tune({});
  EXPECT_NE(none.exit_code, 0);
  auto version = test::run_spark_tune({"--version"});
  EXPECT_EQ(version.exit_code, 0) << version.err;
  EXPECT_EQ(trim(version.out), SPARK_TUNE_VERSION);
}

TEST(Startup, VerbChoice) {
  std::vector<std::string> names{"apply", "revert", "window", "run"};
  auto pick = [&](std::vector<const char*> args) {
    args.insert(args.begin(), "spark-tune");
    return cli::verbs_to_build(static_cast<int>(args.size()), args.data(), names);
  };
  EXPECT_FALSE(pick({"apply", "x.toml"}).all);
  EXPECT_EQ(pick({"apply", "x.toml"}).verb, "apply");
  EXPECT_EQ(pick({"--json", "--state-dir", "apply", "revert"}).verb, "revert");  // a value is no verb
  EXPECT_EQ(pick({"--root", "/r", "window", "begin"}).verb, "window");
  EXPECT_TRUE(pick({}).all);
  EXPECT_TRUE(pick({"--help"}).all);
  EXPECT_TRUE(pick({"--help", "apply"}).all);
  EXPECT_TRUE(pick({"aply"}).all);
  auto v = pick({"--version"});
  EXPECT_FALSE(v.all);
  EXPECT_EQ(v.verb, "");
  EXPECT_EQ(pick({"run", "--", "apply"}).verb, "run");
}

}  // namespace
}  // namespace spark
