// install/spark-tune.{service,socket} pass `systemd-analyze verify` with no complaint (the tool
// exits 0 on many warnings, so its output must be empty too). Skips where systemd-analyze is absent.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/process.h"

namespace {

namespace fs = std::filesystem;

struct Out {
  int exit_code = -1;
  std::string text;  // stdout and stderr together
};

Out run(const std::vector<std::string>& args) {
  spark::ProcessOptions opts;
  opts.merge_stderr = true;
  auto r = spark::run_process(args, opts);
  if (!r) return {-1, r.error().what()};
  return {r->exit_code, r->out};
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class UnitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (run({"systemd-analyze", "--version"}).exit_code != 0) GTEST_SKIP() << "systemd-analyze is not installed";
    install = (fs::path(SPARK_TUNE_TEST_FIXTURES) / "../../install").lexically_normal();
    char tmpl[] = "/tmp/spark-units-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
  // Copies the units, pointing ExecStart at the built binary (verify checks it is executable).
  Out verify(const std::string& service_edit_from = "", const std::string& service_edit_to = "") {
    std::string service =
        std::regex_replace(slurp(install / "spark-tune.service"), std::regex("/usr/bin/spark-tune"), SPARK_TUNE_BINARY);
    if (!service_edit_from.empty())
      service = std::regex_replace(service, std::regex(service_edit_from), service_edit_to);
    std::ofstream(dir / "spark-tune.service") << service;
    std::ofstream(dir / "spark-tune.socket") << slurp(install / "spark-tune.socket");
    return run(
        {"systemd-analyze", "verify", (dir / "spark-tune.service").string(), (dir / "spark-tune.socket").string()});
  }
  fs::path install, dir;
};

TEST_F(UnitsTest, ServiceAndSocketVerifyClean) {
  std::string service = slurp(install / "spark-tune.service");
  ASSERT_NE(service.find("Type=notify"), std::string::npos);
  ASSERT_NE(service.find("WatchdogSec="), std::string::npos);
  ASSERT_NE(service.find("CapabilityBoundingSet="), std::string::npos);
  ASSERT_NE(service.find("ProtectSystem=strict"), std::string::npos);
  Out o = verify();
  EXPECT_EQ(o.exit_code, 0) << o.text;
  EXPECT_EQ(o.text.find("spark-tune."), std::string::npos) << "systemd-analyze complains:\n" << o.text;
}

// The check above can fail: a broken unit is reported.
TEST_F(UnitsTest, BrokenServiceIsReported) {
  Out o = verify("Type=notify", "Type=bogus");
  EXPECT_NE(o.text.find("spark-tune.service"), std::string::npos) << o.text;
}

// The agent's own unit carries the protection `spark-tune protect` gives other units: a memory
// floor, a low OOM score and systemd-oomd's avoid preference -- and it still verifies clean.
TEST_F(UnitsTest, AgentUnitIsProtected) {
  std::string service = slurp(install / "spark-tune.service");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(service, m, std::regex("\\nMemoryMin=([0-9]+)([KMG]?)\\n"))) << service;
  EXPECT_GT(std::stoull(m[1].str()), 0u);
  ASSERT_TRUE(std::regex_search(service, m, std::regex("\\nMemoryLow=[0-9]+[KMG]?\\n")));
  ASSERT_TRUE(std::regex_search(service, m, std::regex("\\nOOMScoreAdjust=(-[0-9]+)\\n"))) << service;
  EXPECT_LE(std::stoi(m[1].str()), -500);  // doctor's protection check wants <= -500
  EXPECT_NE(service.find("\nManagedOOMPreference=avoid\n"), std::string::npos);
  Out o = verify();
  EXPECT_EQ(o.text.find("spark-tune."), std::string::npos) << o.text;
  // A value systemd does not accept is reported: the check above can fail.
  Out bad = verify("OOMScoreAdjust=-900", "OOMScoreAdjust=-5000");
  EXPECT_NE(bad.text.find("OOM score adjust value out of range"), std::string::npos) << bad.text;
}

}  // namespace
