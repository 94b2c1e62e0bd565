// Issue 12, defect 5: docs that state a default are checked against the code and the shipped
// profiles. The defaults live in marked tables ("<!-- defaults: NAME -->" then a markdown table);
// each row's stated value is compared with what the code (or policies/*.toml) gives a user.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "cli/window_options.h"
#include "core/units.h"
#include "profile/profile_options.h"
#include "support/fixture.h"
#include "telemetry/deep_trigger.h"
#include "telemetry/host_fit.h"
#include "telemetry/mm_probes.h"
#include "telemetry/stall_detector.h"
#include "window/window.h"

using spark::tune::CacheMode, spark::tune::cache_mode_name, spark::tune::mapped_policy_name;

using spark::telemetry::DeepTriggerPolicy, spark::telemetry::MmProbeOptions, spark::telemetry::StallThresholds,
    spark::telemetry::k_default_factor, spark::telemetry::k_default_headroom, spark::telemetry::parse_policy_seconds;

using spark::profile::profile_options;

using spark::window::WindowRecord, spark::window::WindowSpec, spark::window::k_default_cache_interval,
    spark::window::k_default_window_readahead_kb, spark::window::k_default_window_ttl, spark::window::k_window_profile;

namespace spark {
namespace {

fs::path source_dir() { return fs::path(SPARK_TUNE_SOURCE_POLICY_DIR).parent_path(); }

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim_cell(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// The rows of the table after "<!-- defaults: NAME -->" (header and separator skipped), as cells.
std::vector<std::vector<std::string>> defaults_table(const fs::path& doc, const std::string& name) {
  std::string text = read_text(doc);
  std::vector<std::vector<std::string>> rows;
  size_t at = text.find("<!-- defaults: " + name + " -->");
  if (at == std::string::npos) return rows;
  std::istringstream in(text.substr(at));
  std::string line;
  std::getline(in, line);  // the marker
  int seen = 0;
  while (std::getline(in, line) && !line.empty() && line[0] == '|') {
    if (seen++ < 2) continue;  // header, separator
    std::vector<std::string> cells;
    std::string cell;
    std::istringstream cs(line.substr(1));
    while (std::getline(cs, cell, '|')) cells.push_back(trim_cell(cell));
    if (!cells.empty() && cells.back().empty()) cells.pop_back();
    rows.push_back(cells);
  }
  return rows;
}

// The first `code` span of a cell; "—" when the cell says there is none.
std::string first_code(const std::string& cell) {
  std::smatch m;
  if (std::regex_search(cell, m, std::regex("`([^`]*)`"))) return m[1];
  return cell == "—" ? "—" : "";
}

std::chrono::milliseconds duration_of(const std::string& s) {
  auto d = parse_duration(s);
  EXPECT_TRUE(d.ok()) << "not a duration: " << s;
  return d.ok() ? *d : std::chrono::milliseconds(-1);
}

uint64_t size_of(const std::string& s) {
  auto v = parse_size(s);
  EXPECT_TRUE(v.ok()) << "not a size: " << s;
  return v.ok() ? *v : ~0ull;
}

// The same value, compared as what it is (a duration, a size, a word).
bool same_window_value(const std::string& key, const std::string& a, const std::string& b) {
  if (key == "window.cache_interval" || key == "window.ttl") return duration_of(a) == duration_of(b);
  if (key == "window.readahead" || key == "window.mapped_budget" || key == "window.read_ahead") {
    if (a == "auto" || b == "auto") return a == b;
    if (a == "off" || b == "off") return (a == "off" ? "0" : a) == (b == "off" ? "0" : b);
    return size_of(a) == size_of(b);
  }
  return a == b;
}

TEST(DocsDefaults, LoadWindowsTableIsTheCodeAndTheShippedProfile) {
  auto rows = defaults_table(source_dir() / "docs" / "load-windows.md", "window");
  ASSERT_GE(rows.size(), 6u) << "docs/load-windows.md lost its defaults table";
  // What the code gives when neither the option nor a profile says anything.
  WindowSpec none;
  WindowRecord rec;
  std::map<std::string, std::string> built_in{
      {"--cache", cache_mode_name(CacheMode::evict)},  // with --files (off without: begin())
      {"--cache-interval", std::to_string(k_default_cache_interval.count()) + "ms"},
      {"--mapped", mapped_policy_name(none.mapped)},
      {"--mapped-budget", std::to_string(none.mapped_budget ? 1 : rec.mapped_budget)},
      {"--ttl", std::to_string(k_default_window_ttl.count()) + "ms"},
      {"--readahead", std::to_string(k_default_window_readahead_kb)},
      {"--read-ahead", std::to_string(rec.read_ahead)},
      {"--free-floor", "off"},  // window/floor.h: no floor unless asked or the profile's holds
      {"--available-floor", "off"},
  };
  // The shipped load-window profile, loaded as the agent loads it (no operator copy in a fixture).
  test::FixtureRoot root;
  auto shipped = profile_options(root.paths(), std::string(k_window_profile));
  ASSERT_TRUE(shipped.ok()) << describe(shipped.error());
  std::set<std::string> documented_keys;
  for (const auto& r : rows) {
    ASSERT_EQ(r.size(), 4u) << "a row of the window defaults table has not 4 cells";
    std::string option = first_code(r[0]), key = first_code(r[1]);
    std::string doc_built_in = first_code(r[2]), doc_shipped = first_code(r[3]);
    SCOPED_TRACE(option);
    ASSERT_TRUE(built_in.count(option)) << "the table names an option the test does not know: " << option;
    std::string code_key = key == "—" ? "" : key;
    if (!code_key.empty()) documented_keys.insert(code_key);
    EXPECT_TRUE(same_window_value(code_key, doc_built_in, built_in[option]))
        << "docs say the built-in default is " << doc_built_in << ", the code has " << built_in[option];
    // What a user gets: the shipped profile's value, else the built-in one.
    std::optional<std::string> profile_value = code_key.empty() ? std::nullopt : shipped->get(code_key);
    if (doc_shipped == "—") {
      EXPECT_FALSE(profile_value) << "docs say load-window does not set " << code_key << ", it sets "
                                  << profile_value.value_or("");
    } else {
      ASSERT_TRUE(profile_value) << "docs say load-window sets " << code_key << " to " << doc_shipped
                                 << "; policies/load-window.toml does not set it";
      EXPECT_TRUE(same_window_value(code_key, doc_shipped, *profile_value))
          << "docs say load-window sets " << doc_shipped << ", policies/load-window.toml has " << *profile_value;
    }
  }
  // Every [window] key the shipped profile sets is in the table.
  for (const auto& [k, v] : shipped->options) {
    if (k.rfind("window.", 0) == 0) {
      EXPECT_TRUE(documented_keys.count(k)) << k << " is not in the defaults table";
    }
  }
}

TEST(DocsDefaults, ProfileKeysTableIsTheCode) {
  auto rows = defaults_table(source_dir() / "docs" / "profiles.md", "profile");
  ASSERT_GE(rows.size(), 6u) << "docs/profiles.md lost its defaults table";
  DeepTriggerPolicy deep;
  StallThresholds thresholds;
  MmProbeOptions probes;
  for (const auto& r : rows) {
    ASSERT_EQ(r.size(), 2u);
    std::string key = first_code(r[0]), value = first_code(r[1]);
    SCOPED_TRACE(key);
    if (key == "preflight.factor") {
      EXPECT_DOUBLE_EQ(std::stod(value), k_default_factor);
    } else if (key == "preflight.headroom") {
      EXPECT_EQ(size_of(value), k_default_headroom);
    } else if (key == "detector.stall_ms") {
      EXPECT_EQ(std::chrono::nanoseconds(static_cast<int64_t>(std::stod(value) * 1e6)), probes.stall_threshold);
    } else if (key == "detector.flood_gib_per_s") {
      EXPECT_EQ(static_cast<uint64_t>(std::stod(value) * double(1ull << 30)), thresholds.pagecache_growth_bytes_per_s);
    } else if (key == "detector.deep_seconds") {
      EXPECT_EQ(parse_policy_seconds(value, nullptr), deep.period);
    } else if (key == "detector.deep_cooldown_s") {
      EXPECT_EQ(parse_policy_seconds(value, nullptr), deep.cooldown);
    } else {
      ADD_FAILURE() << "the table names a key the test does not know: " << key;
    }
  }
}

// Every window option that takes a value with a default has its row: an option cannot ship with
// its default undocumented (as --read-ahead did, with no profile key, until the row and the key
// came together).
TEST(DocsDefaults, EveryWindowOptionWithADefaultHasARow) {
  auto rows = defaults_table(source_dir() / "docs" / "load-windows.md", "window");
  std::set<std::string> documented;
  for (const auto& r : rows)
    if (!r.empty()) documented.insert(first_code(r[0]));
  // Options without a default to state: what the window works on or ends at, and the overlay's source.
  static const std::set<std::string> no_default = {"--files",  "--device",     "--pid",         "--until-port",
                                                   "--sysctl", "--no-overlay", "--profile",     "--label",
                                                   "--force",  "--on-floor",   "--floor-force", "--help"};
  CLI::App app;
  cli::WindowCliOptions o;
  cli::add_window_options(app, o, true);
  size_t checked = 0;
  for (const CLI::Option* opt : app.get_options()) {
    for (const auto& n : opt->get_lnames()) {
      std::string name = "--" + n;
      if (no_default.count(name)) continue;
      ++checked;
      EXPECT_TRUE(documented.count(name)) << name << " has a default but no row in docs/load-windows.md's table";
    }
  }
  EXPECT_GE(checked, 8u) << "the window options were not read";
}

// Prose that quotes the shipped load-window profile (`key = "value"` in docs/profiles.md's
// load-window paragraph) quotes what policies/load-window.toml sets: it once said "auto" where the
// profile sets "0".
TEST(DocsDefaults, ProfilesProseQuotesTheShippedWindowProfile) {
  std::ifstream in(source_dir() / "docs" / "profiles.md");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string doc = ss.str();
  auto at = doc.find("**load-window**");
  ASSERT_NE(at, std::string::npos) << "docs/profiles.md lost its load-window paragraph";
  std::string para = doc.substr(at, doc.find("\n## ", at) - at);
  test::FixtureRoot root;
  auto shipped = profile_options(root.paths(), std::string(k_window_profile));
  ASSERT_TRUE(shipped.ok()) << describe(shipped.error());
  std::regex quoted("`(\\w+) = \"([^\"]*)\"`");
  size_t n = 0;
  for (std::sregex_iterator it(para.begin(), para.end(), quoted), end; it != end; ++it, ++n) {
    std::string key = "window." + (*it)[1].str(), value = (*it)[2];
    auto v = shipped->get(key);
    ASSERT_TRUE(v) << "docs/profiles.md quotes " << key << " = " << value << "; the shipped profile does not set it";
    EXPECT_TRUE(same_window_value(key, value, *v))
        << "docs/profiles.md quotes " << key << " = " << value << "; policies/load-window.toml has " << *v;
  }
  EXPECT_GE(n, 1u) << "no quoted key found: the check checks nothing";
}

// The checker itself: a wrong value in a table is caught (the tests above can fail).
TEST(DocsDefaults, CheckerCatchesAWrongValue) {
  EXPECT_FALSE(same_window_value("window.mapped_budget", "auto", "0"));
  EXPECT_FALSE(same_window_value("window.cache_interval", "100ms", "50ms"));
  EXPECT_TRUE(same_window_value("window.ttl", "180s", "3m"));
  EXPECT_TRUE(same_window_value("window.readahead", "0", "0"));
}

}  // namespace
}  // namespace spark
