// event_latency: time from the kernel marking an OOM victim (bpf_ktime_get_ns() in the
// oom:mark_victim program) to the event in user space through the ring buffer, the path the
// `events` verb and the agent use. 50 memcg OOM kills (a child memory cgroup of this process's
// own, 32 MiB limit), p50/p99/max; beside it, when a daemon polling /proc/vmstat oom_kill every
// 100 ms would have seen the same kills.
//
// Usage: event_latency [--kills N] [--rt]
// --rt runs the reader thread at SCHED_FIFO 1 (what an agent's event thread could do), to show how
// much of the latency is the reader waiting for a CPU on a loaded host.
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "../tests/integration/memcg_child.h"
#include "stats.h"
#include "telemetry/mm_probes.h"
#include "telemetry/vmstat.h"

using spark::telemetry::MmEvent, spark::telemetry::MmProbes, spark::telemetry::read_vmstat;

using namespace spark;
using spark::bench::percentile;
using namespace std::chrono_literals;

namespace {

uint64_t mono_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  int kills = 50;
  bool rt = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--kills" && i + 1 < argc)
      kills = std::atoi(argv[++i]);
    else if (a == "--rt")
      rt = true;
    else {
      std::fprintf(stderr, "usage: event_latency [--kills N] [--rt]\n");
      return 2;
    }
  }
  HostPaths paths = HostPaths::system();
  auto probes = MmProbes::start(paths, {});
  if (!probes.ok()) {
    std::fprintf(stderr, "probes: %s\n", probes.error().what());
    return 1;
  }
  test::MemcgChild cg(paths, "spark-tune-bench-oom-" + std::to_string(::getpid()), 32ull << 20);
  if (!cg.ok()) {
    std::fprintf(stderr, "memcg: %s\n", cg.why().c_str());
    return 1;
  }

  const uint64_t cg_id = cg.inode();
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> victim_ts;      // kernel time of each mark_victim
  std::vector<double> ring_latency_ms;  // receive - mark_victim
  std::vector<uint64_t> poll_seen_ns;   // when a 100 ms vmstat poller saw each kill
  std::atomic<bool> stop{false};

  // The reader: the same loop as `spark-tune events` (poll with a timeout, events as they come).
  std::thread reader([&] {
    if (rt) {
      sched_param sp{};
      sp.sched_priority = 1;
      if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0) std::fprintf(stderr, "SCHED_FIFO refused\n");
    }
    while (!stop) {
      auto r = probes->poll_events(100ms, [&](const MmEvent& e) {
        uint64_t now = mono_ns();
        // Only our kills: other tasks on the host may be OOM-killed meanwhile.
        if (!e.is_oom() || e.raw.memcg_id != cg_id) return;
        std::lock_guard<std::mutex> lock(mu);
        victim_ts.push_back(e.raw.ts_ns);
        ring_latency_ms.push_back(static_cast<double>(now - e.raw.ts_ns) / 1e6);
        cv.notify_all();
      });
      if (!r.ok()) break;
    }
  });
  // The polling baseline: /proc/vmstat oom_kill every 100 ms.
  std::thread poller([&] {
    uint64_t last = read_vmstat(paths)->get("oom_kill");
    while (!stop) {
      std::this_thread::sleep_for(100ms);
      auto v = read_vmstat(paths);
      if (!v.ok()) continue;
      uint64_t now = mono_ns();
      uint64_t k = v->get("oom_kill");
      std::lock_guard<std::mutex> lock(mu);
      for (; last < k; ++last) poll_seen_ns.push_back(now);
    }
  });

  int done = 0;
  for (int i = 0; i < kills; ++i) {
    size_t before;
    {
      std::lock_guard<std::mutex> lock(mu);
      before = ring_latency_ms.size();
    }
    pid_t pid = cg.spawn("bench-oom-hog", [] { test::hog_memory(); });
    if (pid <= 0) break;
    cg.wait();
    std::unique_lock<std::mutex> lock(mu);
    if (cv.wait_for(lock, 3s, [&] { return ring_latency_ms.size() > before; })) ++done;
    // Let the poller catch up before the next kill, so kills pair up one to one.
    lock.unlock();
    std::this_thread::sleep_for(150ms);
  }
  stop = true;
  reader.join();
  poller.join();

  std::vector<double> poll_latency_ms;
  for (size_t i = 0; i < std::min(victim_ts.size(), poll_seen_ns.size()); ++i)
    if (poll_seen_ns[i] >= victim_ts[i])
      poll_latency_ms.push_back(static_cast<double>(poll_seen_ns[i] - victim_ts[i]) / 1e6);
  std::printf("event_latency: %d kills, %zu events on the ring buffer%s\n", done, ring_latency_ms.size(),
              rt ? " (reader SCHED_FIFO 1)" : "");
  std::printf("  ring buffer -> user space: p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", percentile(ring_latency_ms, 0.5),
              percentile(ring_latency_ms, 0.99), percentile(ring_latency_ms, 1.0));
  std::printf("  /proc/vmstat poll @100ms: p50 %.1f ms  p99 %.1f ms  max %.1f ms (n=%zu)\n",
              percentile(poll_latency_ms, 0.5), percentile(poll_latency_ms, 0.99), percentile(poll_latency_ms, 1.0),
              poll_latency_ms.size());
  return done == kills ? 0 : 1;
}
