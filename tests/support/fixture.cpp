#include "support/fixture.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace spark::test {

FixtureRoot::FixtureRoot() {
  std::string tmpl = (fs::temp_directory_path() / "spark-tune-fixture-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  root_ = tmpl;
  paths_ = HostPaths::under(root_);
  fs::create_directories(paths_.state);
  write("proc/sys/kernel/random/boot_id", "00000000-0000-0000-0000-000000000001\n");
}

FixtureRoot::~FixtureRoot() {
  std::error_code ec;
  fs::remove_all(root_, ec);
}

void FixtureRoot::write(const std::string& relative, const std::string& content) const {
  fs::path p = root_ / relative;
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::trunc);
  out << content;
}

std::string FixtureRoot::read(const std::string& relative) const {
  std::ifstream in(root_ / relative);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void FixtureRoot::meminfo(uint64_t total_kb, uint64_t available_kb) const {
  std::ostringstream m;
  m << "MemTotal:       " << total_kb << " kB\n"
    << "MemFree:        " << available_kb / 2 << " kB\n"
    << "MemAvailable:   " << available_kb << " kB\n"
    << "Buffers:               0 kB\n"
    << "Cached:         " << available_kb / 2 << " kB\n"
    << "SwapTotal:             0 kB\n"
    << "SwapFree:              0 kB\n"
    << "Dirty:                 0 kB\n"
    << "Writeback:             0 kB\n"
    << "AnonPages:      " << (total_kb - available_kb) << " kB\n"
    << "Unevictable:           0 kB\n"
    << "Mlocked:               0 kB\n";
  write("proc/meminfo", m.str());
}

void copy_fixture(const FixtureRoot& root, const std::string& fixture, const std::string& relative) {
  std::ifstream in(fs::path(SPARK_TUNE_TEST_FIXTURES) / fixture);
  if (!in) throw std::runtime_error("missing fixture " + fixture);
  std::stringstream ss;
  ss << in.rdbuf();
  root.write(relative, ss.str());
}

bool is_root() { return ::geteuid() == 0; }

std::optional<uint64_t> process_read_bytes() {
  std::ifstream in("/proc/self/io");
  std::string key;
  uint64_t v = 0;
  while (in >> key >> v)
    if (key == "read_bytes:") return v;
  return std::nullopt;
}

int time_scale() {
  const char* v = std::getenv("SPARK_TUNE_TEST_TIME_SCALE");
  if (!v) return 1;
  int n = std::atoi(v);
  return n < 1 ? 1 : (n > 20 ? 20 : n);
}

}  // namespace spark::test
