#include "telemetry/stall_detector.h"

#include <unistd.h>

#include <cstdio>

#include "core/units.h"
#include "telemetry/frag_index.h"

namespace spark::telemetry {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string ms(uint64_t ns) { return fmt("%.1f ms", static_cast<double>(ns) / 1e6); }

}  // namespace

bool StallDetector::cooled(const std::string& kind, std::chrono::system_clock::time_point now) {
  auto it = last_.find(kind);
  if (it != last_.end() && now - it->second < t_.cooldown) return false;
  last_[kind] = now;
  return true;
}

std::optional<DetectedEvent> StallDetector::on_event(const MmEvent& e, std::chrono::system_clock::time_point now) {
  if (e.is_oom()) {
    ++oom_events_seen_;
    DetectedEvent d;
    d.type = "oom_kill";
    d.time = now;
    bool memcg = e.memcg_oom();
    uint64_t rss_kb = e.raw.rss_anon_kb + e.raw.rss_file_kb + e.raw.rss_shmem_kb;
    d.summary = "OOM killer chose " + e.comm + " (pid " + std::to_string(e.raw.pid) + ", rss " +
                format_size(rss_kb * 1024) + ") " +
                (memcg ? "at the limit of memory cgroup " +
                             (e.oom_memcg_path.empty() ? std::to_string(e.raw.oom_memcg_id) : e.oom_memcg_path)
                 : (e.raw.flags & MM_EF_MEMCG_UNKNOWN) ? std::string("(memcg not known)")
                                                       : std::string("with the whole host out of memory"));
    d.hint =
        memcg ? "the server outgrew its memory budget: raise the cgroup limit or cap its caches (context checkpoints)"
              : "the host ran out of memory: refuse loads that do not fit (spark-tune preflight) and keep a "
                "min_free_kbytes reserve";
    d.subject = std::to_string(e.raw.pid);
    d.data = {{"pid", e.raw.pid},
              {"comm", e.comm},
              {"memcg", e.memcg_path},
              {"memcg_id", e.raw.memcg_id},
              {"oom_memcg", e.oom_memcg_path},
              {"scope", memcg ? "memcg" : ((e.raw.flags & MM_EF_MEMCG_UNKNOWN) ? "unknown" : "global")},
              {"rss_anon_kb", e.raw.rss_anon_kb},
              {"rss_file_kb", e.raw.rss_file_kb},
              {"rss_shmem_kb", e.raw.rss_shmem_kb},
              {"oom_score_adj", e.raw.oom_score_adj}};
    return d;
  }
  if (e.raw.type == MM_EVENT_STALL) {
    auto dur = std::chrono::nanoseconds(e.raw.duration_ns);
    bool direct = e.raw.stall_kind == MM_HIST_DIRECT_RECLAIM || e.raw.stall_kind == MM_HIST_MEMCG_RECLAIM ||
                  e.raw.stall_kind == MM_HIST_COMPACTION_DIRECT;
    if (!direct || dur < t_.task_stall || !cooled("fragmentation_stall", now)) return std::nullopt;
    DetectedEvent d;
    d.type = "fragmentation_stall";
    d.time = now;
    const char* where = hist_kind_name(static_cast<mm_hist_kind>(e.raw.stall_kind));
    d.summary = e.comm + " (pid " + std::to_string(e.raw.pid) + ") stalled " + ms(e.raw.duration_ns) + " in " + where +
                (e.raw.order >= 0 ? " for an order-" + std::to_string(e.raw.order) + " allocation" : "");
    d.hint = e.raw.stall_kind == MM_HIST_COMPACTION_DIRECT
                 ? "allocations wait on compaction: compact ahead of the load (vm.compact_memory) and raise "
                   "vm.min_free_kbytes"
                 : "allocations wait on reclaim: raise vm.min_free_kbytes / watermark_scale_factor and cut the page "
                   "cache during the load";
    d.subject = std::to_string(e.raw.pid);
    d.data = {{"pid", e.raw.pid},
              {"tid", e.raw.tid},
              {"comm", e.comm},
              {"stall", where},
              {"order", e.raw.order},
              {"duration_ns", e.raw.duration_ns},
              {"nr_reclaimed", e.raw.nr_reclaimed}};
    return d;
  }
  return std::nullopt;
}

std::vector<DetectedEvent> StallDetector::feed(const TelemetryInterval& iv, const std::vector<MmEvent>& events,
                                               bool window_open) {
  std::vector<DetectedEvent> out;
  if (!iv.before || !iv.after || iv.seconds <= 0) return out;
  const TelemetrySample& now = *iv.after;
  auto at = now.wall;
  // OOM events counted here: those given now plus those that came through on_event() since the
  // last interval.
  for (const auto& e : events)
    if (auto d = on_event(e, at)) out.push_back(std::move(*d));

  // OOM kills the probes did not see (procfs only, or a probe missing): vmstat's oom_kill.
  uint64_t kills = iv.vmstat.get("oom_kill");
  if (kills > oom_events_seen_) {
    DetectedEvent d;
    d.type = "oom_kill";
    d.time = at;
    uint64_t unseen = kills - oom_events_seen_;
    d.summary = std::to_string(unseen) + " OOM kill(s) in the last " + fmt("%.1f s", iv.seconds) +
                " (from /proc/vmstat; no victim details)";
    d.hint = "see the kernel log for the victim; run spark-tune with eBPF (root, BTF) for pid, comm and memcg";
    d.data = {{"vmstat_oom_kill", kills}, {"seen_by_probes", oom_events_seen_}};
    out.push_back(std::move(d));
  }
  // A probe event can come just before vmstat counts the kill: carry the surplus to the next
  // interval instead of reporting that kill twice.
  oom_events_seen_ = oom_events_seen_ > kills ? oom_events_seen_ - kills : 0;

  // fragmentation_stall from buddyinfo: high orders exhausted on a node while memory is available.
  uint64_t total = now.mem.total();
  uint64_t avail = now.mem.available();
  if (total > 0 && static_cast<double>(avail) >= t_.min_available_fraction * static_cast<double>(total)) {
    for (int node : now.buddy.nodes()) {
      bool any_high = false;
      uint64_t node_free_pages = 0;
      for (const auto& z : now.buddy.zones) {
        // ZONE_DMA (16 MiB, kept back by lowmem_reserve) serves no ordinary allocation.
        if (z.node != node || z.zone == "DMA") continue;
        node_free_pages += z.free_pages();
        if (z.free_pages_at_least(t_.high_order) > 0) any_high = true;
      }
      if (any_high || node_free_pages == 0 || now.buddy.orders() <= t_.high_order) continue;
      if (!cooled("fragmentation_stall", at)) break;
      // Evidence per zone, as the kernel computes the indices; the summary quotes the zone with
      // the most free memory.
      const ZoneFreeBlocks* biggest = nullptr;
      nlohmann::json zones = nlohmann::json::array();
      for (const auto& z : now.buddy.zones) {
        if (z.node != node || z.zone == "DMA") continue;
        if (!biggest || z.free_pages() > biggest->free_pages()) biggest = &z;
        nlohmann::json idx = nlohmann::json::array();
        for (unsigned o = t_.high_order; o < z.free.size(); ++o)
          idx.push_back({{"order", o},
                         {"fragmentation_index", format_index(fragmentation_index(z.free, o))},
                         {"unusable_index", format_index(unusable_free_index(z.free, o))}});
        zones.push_back({{"zone", z.zone}, {"free_blocks_by_order", z.free}, {"high_orders", idx}});
      }
      DetectedEvent d;
      d.type = "fragmentation_stall";
      d.time = at;
      int fi = fragmentation_index(biggest->free, t_.high_order);
      d.summary = "node " + std::to_string(node) + " has no free block of order >= " + std::to_string(t_.high_order) +
                  " although " + format_size(avail) + " is available (" + biggest->zone + " fragmentation index " +
                  format_index(fi) + ")";
      d.hint =
          "large contiguous (pinned) allocations will stall or hang: compact now (vm.compact_memory), "
          "raise vm.min_free_kbytes, or load with GGML_CUDA_NO_PINNED=1";
      d.data = {{"node", node},
                {"zones", zones},
                {"mem_available", avail},
                {"mem_total", total},
                {"node_free_bytes", node_free_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE))},
                {"high_order", t_.high_order}};
      out.push_back(std::move(d));
      break;
    }
  }

  // reclaim_storm.
  double allocstalls = iv.vmstat.rate_prefix("allocstall_");
  double pgscan = iv.vmstat.rate("pgscan_direct");
  double psi10 = now.psi ? now.psi->some.avg10 : 0;
  std::vector<std::string> why;
  if (allocstalls >= t_.allocstall_per_s) why.push_back(fmt("%.0f direct reclaims/s", allocstalls));
  if (pgscan >= t_.pgscan_direct_per_s) why.push_back(fmt("%.0f pages/s scanned by direct reclaim", pgscan));
  if (now.psi && psi10 >= t_.psi_some_avg10) why.push_back(fmt("memory PSI some avg10 %.1f%%", psi10));
  // The PSI trigger alone is not a storm (its threshold is low so the loop wakes early); with
  // direct reclaim going on at the same time it is.
  if (iv.psi_triggered &&
      (allocstalls > 0 || pgscan > 0 || (iv.probes && iv.probes->hists[MM_HIST_DIRECT_RECLAIM].count)))
    why.push_back("PSI trigger fired during direct reclaim");
  if (!why.empty() && cooled("reclaim_storm", at)) {
    DetectedEvent d;
    d.type = "reclaim_storm";
    d.time = at;
    d.summary = "reclaim storm: ";
    for (size_t i = 0; i < why.size(); ++i) d.summary += (i ? ", " : "") + why[i];
    d.hint =
        "allocating tasks are doing the kernel's reclaim: raise vm.min_free_kbytes so kswapd starts earlier, "
        "and cap the page cache during loads (spark-tune window)";
    d.data = {{"allocstall_per_s", allocstalls},
              {"pgscan_direct_per_s", pgscan},
              {"pgsteal_direct_per_s", iv.vmstat.rate("pgsteal_direct")},
              {"psi_some_avg10", psi10},
              {"psi_trigger", iv.psi_triggered},
              {"interval_s", iv.seconds}};
    if (iv.probes) {
      const auto& h = iv.probes->hists[MM_HIST_DIRECT_RECLAIM];
      d.data["direct_reclaim_count"] = h.count;
      d.data["direct_reclaim_p99_ns"] = h.quantile_ns(0.99);
      d.data["memcg_reclaim_count"] = iv.probes->hists[MM_HIST_MEMCG_RECLAIM].count;
    }
    out.push_back(std::move(d));
  }

  // pagecache_flood.
  if (!t_.pagecache_only_in_window || window_open) {
    uint64_t c0 = iv.before->mem.cached();
    uint64_t c1 = now.mem.cached();
    double growth = c1 > c0 ? static_cast<double>(c1 - c0) / iv.seconds : 0;
    if (growth >= static_cast<double>(t_.pagecache_growth_bytes_per_s) && cooled("pagecache_flood", at)) {
      DetectedEvent d;
      d.type = "pagecache_flood";
      d.time = at;
      d.summary = "page cache growing " + format_size(static_cast<uint64_t>(growth)) + "/s (now " + format_size(c1) +
                  ", " + format_size(avail) + " available)";
      d.hint = window_open
                   ? "the cache grows inside a load window: files outside the window are being read, or the "
                     "evict pass falls behind (name them with --files, lower window.cache_interval, or --cache drop)"
                   : "a model load is streaming through the page cache: open a load window (spark-tune window begin) "
                     "to throttle readahead and cap the cache";
      d.data = {{"cached_before", c0},    {"cached_after", c1},       {"growth_bytes_per_s", growth},
                {"mem_available", avail}, {"dirty", now.mem.dirty()}, {"window_open", window_open}};
      out.push_back(std::move(d));
    }
  }
  return out;
}

}  // namespace spark::telemetry
