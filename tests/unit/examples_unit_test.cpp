// The guide's systemd unit (examples/dgx-spark/llama-server.service, docs/guides/dgx-spark.md) never
// drifts from the code: systemd-analyze verify accepts it, and every spark-tune command line in it
// parses with spark-tune's own CLI definitions.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "cli/app.h"
#include "core/fs.h"
#include "core/process.h"

namespace spark {
namespace {

fs::path source_dir() { return fs::path(SPARK_TUNE_SOURCE_POLICY_DIR).parent_path(); }

std::string unit_text() {
  std::ifstream in(source_dir() / "examples/dgx-spark/llama-server.service");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The words of each Exec*= line that runs spark-tune (the unit uses no quoting).
std::vector<std::vector<std::string>> spark_tune_lines(const std::string& text) {
  std::vector<std::vector<std::string>> out;
  for (const auto& line : split_lines(text)) {
    if (line.rfind("ExecStart", 0) != 0) continue;
    std::istringstream in(line.substr(line.find('=') + 1));
    std::vector<std::string> words;
    std::string w;
    while (in >> w) words.push_back(w);
    if (!words.empty() && words[0].ends_with("/spark-tune")) out.push_back(words);
  }
  return out;
}

TEST(Examples, LlamaServerUnitParsesWithOurCli) {
  auto lines = spark_tune_lines(unit_text());
  ASSERT_EQ(lines.size(), 2u) << "the unit lost its ExecStartPre/ExecStart spark-tune lines";
  for (const auto& argv : lines) {
    CLI::App app;
    cli::Context ctx;
    cli::GlobalOptions global;
    cli::build_app(app, ctx, global);
    // Parse only: no verb runs.
    for (auto* sub : app.get_subcommands([](CLI::App*) { return true; })) sub->callback([] {});
    std::vector<std::string> args(argv.rbegin(), argv.rend() - 1);  // CLI11 takes them reversed, without argv[0]
    try {
      app.parse(args);
    } catch (const CLI::ParseError& e) {
      ADD_FAILURE() << "does not parse: " << e.what() << " in: " << argv[1] << " ...";
    }
  }
  auto run = lines[1];
  for (const char* must : {"--restart", "--until-port", "--host-floor", "--files"})
    EXPECT_NE(std::find(run.begin(), run.end(), must), run.end()) << must;
}

TEST(Examples, LlamaServerUnitVerifies) {
  if (::access("/usr/bin/systemd-analyze", X_OK) != 0) GTEST_SKIP() << "no systemd-analyze on this host";
  // The unit as installed, with this build's spark-tune in place of /usr/bin/spark-tune (verify
  // checks that the program exists).
  char tmpl[] = "/tmp/spark-unit-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  fs::path dir = tmpl;
  std::string text = unit_text();
  for (size_t at; (at = text.find("/usr/bin/spark-tune")) != std::string::npos;)
    text.replace(at, 19, SPARK_TUNE_BINARY);
  std::ofstream(dir / "llama-server.service") << text;
  auto r = run_process({"/usr/bin/systemd-analyze", "verify", "--man=no", (dir / "llama-server.service").string()},
                       {.extra_env = {}, .merge_stderr = true});
  std::error_code ec;
  fs::remove_all(dir, ec);
  ASSERT_TRUE(r) << r.error().what();
  // Units it refers to that this host does not have (spark-tune.socket before the package is
  // installed) are not the unit's fault; anything else is.
  std::string bad;
  for (const auto& line : split_lines(r->out))
    if (!line.empty() && line.find("spark-tune.socket") == std::string::npos &&
        line.find("network-online.target") == std::string::npos)
      bad += line + "\n";
  EXPECT_TRUE(bad.empty()) << "systemd-analyze verify (exit " << r->exit_code << "):\n" << r->out;
}

}  // namespace
}  // namespace spark
