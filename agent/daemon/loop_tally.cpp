#include "daemon/loop_tally.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "core/log.h"

namespace spark::daemon {

namespace {
int64_t ns_of(LoopTally::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace

std::unique_ptr<LoopTally> LoopTally::from_env(const HostPaths& paths) {
  const char* file = std::getenv("SPARK_TUNE_LOOP_TALLY");
  if (!file || !*file) return nullptr;
  std::FILE* out = std::fopen(file, "we");
  if (!out) {
    log_warning(std::string("SPARK_TUNE_LOOP_TALLY: cannot open ") + file + ": " + std::strerror(errno) +
                " (no loop tally)");
    return nullptr;
  }
  // A large buffer: a line per round, written out a few times a second.
  (void)std::setvbuf(out, nullptr, _IOFBF, 1 << 20);
  int fd = ::open((paths.proc / "thread-self/schedstat").c_str(), O_RDONLY | O_CLOEXEC);
  log_info(std::string("loop tally to ") + file);
  return std::make_unique<LoopTally>(out, fd);
}

LoopTally::LoopTally(std::FILE* out, int schedstat_fd) : out_(out), schedstat_fd_(schedstat_fd) {}

LoopTally::~LoopTally() {
  if (out_) std::fclose(out_);
}

uint64_t LoopTally::run_delay_ns() const {
  // schedstat: "<on-cpu ns> <run delay ns> <timeslices>"
  if (!schedstat_fd_.valid()) return 0;
  char buf[128];
  ssize_t n = ::pread(schedstat_fd_.get(), buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = 0;
  char* end = nullptr;
  (void)std::strtoull(buf, &end, 10);
  return std::strtoull(end, nullptr, 10);
}

int64_t LoopTally::cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void LoopTally::before_poll() {
  poll_at_ = Clock::now();
  delay_poll_ = run_delay_ns();
  items_.clear();
}

void LoopTally::after_poll() {
  start_ = Clock::now();
  delay_start_ = run_delay_ns();
  cpu_start_ = cpu_ns();
}

void LoopTally::add(std::string_view label, Clock::time_point start) {
  items_.push_back(
      {std::string(label), std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count()});
}

void LoopTally::round_end() {
  if (items_.empty()) return;
  auto end = Clock::now();
  uint64_t delay_end = run_delay_ns();
  std::fprintf(out_, "%lld %lld %lld %lld %llu %llu", static_cast<long long>(ns_of(poll_at_)),
               static_cast<long long>(ns_of(start_)), static_cast<long long>(ns_of(end)),
               static_cast<long long>(cpu_ns() - cpu_start_),
               static_cast<unsigned long long>(delay_start_ - delay_poll_),
               static_cast<unsigned long long>(delay_end - delay_start_));
  for (const auto& i : items_) std::fprintf(out_, " %s:%lld", i.label.c_str(), static_cast<long long>(i.us));
  std::fputc('\n', out_);
  items_.clear();
}

}  // namespace spark::daemon
