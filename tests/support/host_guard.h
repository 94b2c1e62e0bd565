// Integration-test helpers: snapshot kernel values and put them back whatever the test does.
// (The spark-tune binary is run by support/run_spark_tune.h.)
#pragma once

#include <map>
#include <string>
#include <vector>

namespace spark::test {

// Remembers the current value of each file (a /proc/sys or /sys path) and writes it back when
// destroyed, so a failing test never leaves the machine tuned.
class KernelValueGuard {
 public:
  explicit KernelValueGuard(const std::vector<std::string>& files);
  ~KernelValueGuard();
  KernelValueGuard(const KernelValueGuard&) = delete;
  KernelValueGuard& operator=(const KernelValueGuard&) = delete;
  const std::map<std::string, std::string>& saved() const { return saved_; }
  // The saved value, normalised ("[madvise]" -> "madvise").
  std::string original(const std::string& file) const;

 private:
  std::map<std::string, std::string> saved_;
};

// Every sysctl and THP file the shipped profiles can touch.
std::vector<std::string> profile_kernel_files();
// Reads a kernel file and normalises it like the actuator does.
std::string kernel_value(const std::string& file);

}  // namespace spark::test
