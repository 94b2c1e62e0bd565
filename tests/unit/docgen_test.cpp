// The man page and shell completion are generated from the CLI's own definitions (cli/app.cpp,
// cli/doc_render.cpp): every verb, sub-verb and option appears, the exit codes are documented, and
// the files the build installs are exactly what the current definitions give.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "cli/app.h"
#include "cli/doc_render.h"
#include "core/process.h"

namespace spark::cli {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string man_escaped(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '-' ? std::string("\\-") : std::string(1, c);
  return out;
}

struct DocgenTest : ::testing::Test {
  Context ctx;
  GlobalOptions global;
  CLI::App app{k_app_description, "spark-tune"};
  void SetUp() override { build_app(app, ctx, global); }
};

TEST_F(DocgenTest, EveryVerbAndSubVerbIsInTheManPageAndTheCompletions) {
  std::string man = render_man(app, "0.0.0");
  std::string bash = render_bash_completion(app);
  std::string zsh = render_zsh_completion(app);
  // The registry's own verb names, independent of how the renderer walks the app.
  ASSERT_FALSE(verbs().empty());
  for (const auto& v : verbs()) {
    SCOPED_TRACE(v.name);
    EXPECT_NE(man.find(".SS \"spark\\-tune " + man_escaped(v.name) + "\""), std::string::npos);
    EXPECT_NE(bash.find("root/" + v.name + ") cmdpath=root/" + v.name + " ;;"), std::string::npos);
    EXPECT_NE(zsh.find("root/" + v.name + ") cmdpath=root/" + v.name + " ;;"), std::string::npos);
  }
  auto paths = command_paths(app);
  EXPECT_GT(paths.size(), verbs().size()) << "sub-verbs (window begin, guard list, ...) are walked too";
  for (const auto& p : paths) {
    std::string spaced, slashed = "root";
    for (const auto& w : p) {
      spaced += (spaced.empty() ? "" : " ") + w;
      slashed += "/" + w;
    }
    SCOPED_TRACE(spaced);
    EXPECT_NE(man.find(".SS \"spark\\-tune " + man_escaped(spaced) + "\""), std::string::npos);
    EXPECT_NE(bash.find("    " + slashed + ") subs="), std::string::npos);
    EXPECT_NE(zsh.find("    " + slashed + ")\n"), std::string::npos);
  }
}

TEST_F(DocgenTest, EveryVisibleOptionIsDocumentedAndHiddenOnesAreNot) {
  std::string man = render_man(app, "0.0.0");
  std::string bash = render_bash_completion(app);
  size_t checked = 0;
  std::function<void(const CLI::App&)> walk = [&](const CLI::App& a) {
    for (const auto* o : a.get_options()) {
      if (o->get_group().empty()) continue;  // hidden
      for (const auto& l : o->get_lnames()) {
        SCOPED_TRACE(a.get_name() + " --" + l);
        EXPECT_NE(man.find("\\fB\\-\\-" + man_escaped(l) + "\\fR"), std::string::npos);
        EXPECT_TRUE(bash.find("--" + l + " ") != std::string::npos || bash.find("--" + l + "\"") != std::string::npos);
        ++checked;
      }
    }
    for (const auto* c : a.get_subcommands([](const CLI::App* c) { return !c->get_group().empty(); })) walk(*c);
  };
  walk(app);
  EXPECT_GT(checked, 30u);
  // --root is hidden (fixture trees, testing): named nowhere.
  EXPECT_EQ(man.find("\\-\\-root"), std::string::npos);
  EXPECT_EQ(bash.find("--root"), std::string::npos);
  EXPECT_NE(man.find("\\-\\-stop\\-agent"), std::string::npos);
}

TEST_F(DocgenTest, ExitCodesAreInTheManPage) {
  std::string man = render_man(app, "0.0.0");
  auto at = man.find(".SH EXIT STATUS");
  ASSERT_NE(at, std::string::npos);
  for (const auto& e : k_exit_codes)
    EXPECT_NE(man.find("\\fB" + std::to_string(e.code) + "\\fR", at), std::string::npos);
}

TEST_F(DocgenTest, TheBuiltFilesAreWhatTheDefinitionsGive) {
  // The build ran spark-tune-docgen on the same definitions: a stale or hand-edited file differs.
  EXPECT_EQ(slurp(std::string(SPARK_TUNE_DOC_OUT) + "/spark-tune.1"), render_man(app, SPARK_TUNE_VERSION));
  EXPECT_EQ(slurp(std::string(SPARK_TUNE_DOC_OUT) + "/spark-tune.bash"), render_bash_completion(app));
  EXPECT_EQ(slurp(std::string(SPARK_TUNE_DOC_OUT) + "/_spark-tune"), render_zsh_completion(app));
}

TEST_F(DocgenTest, TheBashCompletionParsesAndCompletes) {
  std::string file = std::string(SPARK_TUNE_DOC_OUT) + "/spark-tune.bash";
  auto syntax = run_process({"bash", "-n", file});
  ASSERT_TRUE(syntax.ok()) << syntax.error().what();
  EXPECT_EQ(syntax->exit_code, 0) << syntax->err;
  // Completing "spark-tune window b" gives "begin"; "spark-tune revert --st" gives the flag.
  auto complete = [&](const std::string& line, int cword) {
    std::string script = "source " + file + "; COMP_WORDS=(" + line + "); COMP_CWORD=" + std::to_string(cword) +
                         "; _spark_tune; printf '%s\\n' \"${COMPREPLY[@]}\"";
    auto r = run_process({"bash", "-c", script});
    return r.ok() ? r->out : std::string("(failed)");
  };
  EXPECT_EQ(complete("spark-tune window b", 2), "begin\n");
  EXPECT_EQ(complete("spark-tune revert --st", 2), "--state-dir\n--stop-agent\n");
}

}  // namespace
}  // namespace spark::cli
