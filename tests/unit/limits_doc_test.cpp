// docs/cli.md "Limits": each number the table states is the code's constant.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "daemon/control_frame.h"
#include "daemon/metrics_http.h"
#include "guard/supervisor.h"
#include "profile/profile.h"
#include "tune/page_cache.h"
#include "window/window.h"

using spark::tune::k_max_window_files;

using spark::profile::k_max_profile_bytes;

using spark::window::k_max_window_ttl, spark::window::k_max_windows;

namespace spark {
namespace {

std::string limits_table() {
  fs::path doc = fs::path(SPARK_TUNE_SOURCE_POLICY_DIR).parent_path() / "docs/cli.md";
  std::ifstream in(doc);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  size_t at = text.find("<!-- limits -->");
  if (at == std::string::npos) return "";
  size_t end = text.find("\n\n", at);
  return text.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// The row whose first cell starts with `what`: its second cell.
std::string limit_of(const std::string& table, const std::string& what) {
  std::istringstream in(table);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| " + what, 0) != 0) continue;
    size_t a = line.find('|', 1);
    size_t b = line.find('|', a + 1);
    std::string cell = line.substr(a + 1, b - a - 1);
    return cell.substr(1, cell.size() - 2);
  }
  return "(no row)";
}

TEST(LimitsDoc, TableMatchesTheCode) {
  std::string t = limits_table();
  ASSERT_FALSE(t.empty()) << "docs/cli.md has no <!-- limits --> table";
  EXPECT_EQ(limit_of(t, "profile file"), std::to_string(k_max_profile_bytes) + " bytes");
  EXPECT_EQ(limit_of(t, "control socket request line"), std::to_string(daemon::k_max_frame_bytes) + " bytes");
  EXPECT_EQ(limit_of(t, "control socket JSON nesting"), std::to_string(daemon::k_max_json_depth) + " levels");
  EXPECT_EQ(limit_of(t, "control connections at once"), std::to_string(daemon::k_max_control_clients));
  EXPECT_EQ(limit_of(t, "control connection idle"), std::to_string(daemon::k_control_idle_timeout.count()) + " s");
  EXPECT_EQ(limit_of(t, "control replies a client leaves unread"),
            std::to_string(daemon::k_max_reply_backlog) + " bytes, or none read for " +
                std::to_string(daemon::k_control_send_deadline.count()) + " s");
  EXPECT_EQ(limit_of(t, "`/metrics` connections at once"), std::to_string(daemon::k_max_http_clients));
  EXPECT_EQ(limit_of(t, "`/metrics` request head"), std::to_string(daemon::k_max_http_request) + " bytes");
  EXPECT_EQ(limit_of(t, "`/metrics` header lines"), std::to_string(daemon::k_max_http_headers));
  EXPECT_EQ(limit_of(t, "`/metrics` request time"), std::to_string(daemon::k_http_client_deadline.count()) + " ms");
  EXPECT_EQ(limit_of(t, "windows open at once"), std::to_string(k_max_windows));
  EXPECT_EQ(limit_of(t, "guards held at once"), std::to_string(guard::k_max_guards));
  EXPECT_EQ(limit_of(t, "files per window"), std::to_string(k_max_window_files));
  EXPECT_EQ(limit_of(t, "window TTL"), std::to_string(k_max_window_ttl.count() / 3'600'000) + " h");
}

}  // namespace
}  // namespace spark
