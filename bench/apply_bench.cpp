// apply + verify + revert of a profile (default dgx-spark) on the real kernel, N round trips.
// Prints median and p99 of the whole round trip and of each step. The journal lives in a temp
// state directory; revert restores every value each round, and a final check compares with the start.
//   sudo build/bench/apply_bench [PROFILE] [ROUNDS]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "core/log.h"
#include "profile/profile_ops.h"

using namespace spark;
using Clock = std::chrono::steady_clock;

namespace {

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void report(const char* what, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]; };
  std::printf("%-22s median %7.3f ms   p99 %7.3f ms   max %7.3f ms\n", what, pct(0.5), pct(0.99), v.back());
}

}  // namespace

int main(int argc, char** argv) {
  std::string profile = argc > 1 ? argv[1] : "dgx-spark";
  int rounds = argc > 2 ? std::atoi(argv[2]) : 200;
  if (::geteuid() != 0) {
    std::fprintf(stderr, "apply_bench writes /proc/sys: run it as root\n");
    return 2;
  }
  set_log_level(LogLevel::warning);  // every change is logged; the bench measures the work, not the terminal
  HostPaths paths = HostPaths::system();
  paths.state = std::filesystem::temp_directory_path() / ("spark-tune-bench-" + std::to_string(::getpid()));
  HostActuator act(paths);
  Tuner tuner(paths, act);

  auto before = resolve_named_profile(paths, profile, act);
  if (!before) {
    std::fprintf(stderr, "%s\n", before.error().what());
    return 2;
  }
  std::vector<double> apply_ms, verify_ms, revert_ms, total_ms;
  for (int i = 0; i < rounds; ++i) {
    auto t0 = Clock::now();
    auto a = apply_profile(paths, act, {profile, false, false, false});
    auto t1 = Clock::now();
    auto v = verify_profile(paths, act, std::nullopt);
    auto t2 = Clock::now();
    auto r = tuner.revert_all();
    auto t3 = Clock::now();
    if (!a || !v || !r || v->drift()) {
      std::fprintf(stderr, "round %d failed: %s\n", i,
                   !a ? a.error().what() : !v ? v.error().what() : !r ? r.error().what() : "drift after apply");
      (void)tuner.revert_all();
      return 1;
    }
    apply_ms.push_back(ms(t1 - t0));
    verify_ms.push_back(ms(t2 - t1));
    revert_ms.push_back(ms(t3 - t2));
    total_ms.push_back(ms(t3 - t0));
  }
  std::filesystem::remove_all(paths.state);
  auto after = resolve_named_profile(paths, profile, act);
  bool same = after.ok();
  for (size_t i = 0; same && i < before->settings.size(); ++i)
    same = before->settings[i].current == after->settings[i].current;
  std::printf("profile %s, %zu keys, %d rounds (journal fsynced on every change)\n", profile.c_str(),
              before->settings.size(), rounds);
  report("apply", apply_ms);
  report("verify", verify_ms);
  report("revert", revert_ms);
  report("apply+verify+revert", total_ms);
  std::printf("host values after the run identical to before: %s\n", same ? "yes" : "NO");
  return same ? 0 : 1;
}
