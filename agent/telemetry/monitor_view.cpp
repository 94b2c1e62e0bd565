#include "telemetry/monitor_view.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "core/units.h"
#include "telemetry/frag_index.h"

namespace spark::telemetry {

namespace {

uint64_t page_size() {
  static const uint64_t p = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return p;
}

double index_value(int milli) { return milli / 1000.0; }

nlohmann::json hist_json(const LatencyHistogram& h, double seconds) {
  return {{"count", h.count},
          {"per_s", seconds > 0 ? static_cast<double>(h.count) / seconds : 0},
          {"mean_ns", h.mean_ns()},
          {"p50_ns", h.quantile_ns(0.5)},
          {"p99_ns", h.quantile_ns(0.99)},
          {"max_since_start_ns", h.max_ns}};
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string dur(uint64_t ns) {
  if (ns == 0) return "-";
  if (ns < 1000) return std::to_string(ns) + "ns";
  if (ns < 1000000) return fmt("%.1fus", static_cast<double>(ns) / 1e3);
  if (ns < 1000000000) return fmt("%.1fms", static_cast<double>(ns) / 1e6);
  return fmt("%.2fs", static_cast<double>(ns) / 1e9);
}

std::string clock_time(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

}  // namespace

nlohmann::json deep_json(const DeepReport& r) {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& t : r.top)
    top.push_back({{"pid", t.tgid}, {"comm", t.comm}, {"allocs", t.calls}, {"pages", t.pages}});
  return {{"seconds", r.seconds}, {"program", r.kind}, {"allocs_by_order", r.orders}, {"top_tasks", top}};
}

nlohmann::json monitor_json(const MonitorFrame& f) {
  const TelemetryInterval& iv = *f.interval;
  const TelemetrySample& s = *iv.after;
  nlohmann::json j;
  j["time_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(s.wall.time_since_epoch()).count();
  j["interval_s"] = iv.seconds;
  j["probes"] = f.probe_status;
  const MemInfo& m = s.mem;
  j["memory"] = {
      {"total", m.total()},    {"available", m.available()}, {"free", m.free()}, {"cached", m.cached()},
      {"dirty", m.dirty()},    {"writeback", m.writeback()}, {"anon", m.anon()}, {"unevictable", m.unevictable()},
      {"mlocked", m.mlocked()}};
  if (iv.seconds > 0) {
    double d = static_cast<double>(m.cached()) - static_cast<double>(iv.before->mem.cached());
    j["memory"]["cached_change_per_s"] = d / iv.seconds;
  }
  nlohmann::json zones = nlohmann::json::array();
  for (const auto& z : s.buddy.zones) {
    nlohmann::json fi = nlohmann::json::array(), ui = nlohmann::json::array();
    for (unsigned o = 0; o < z.free.size(); ++o) {
      fi.push_back(index_value(fragmentation_index(z.free, o)));
      ui.push_back(index_value(unusable_free_index(z.free, o)));
    }
    zones.push_back({{"node", z.node},
                     {"zone", z.zone},
                     {"free_blocks", z.free},
                     {"free_bytes", z.free_pages() * page_size()},
                     {"fragmentation_index", fi},
                     {"unusable_index", ui}});
  }
  j["zones"] = zones;
  const VmStatDelta& v = iv.vmstat;
  j["vmstat_per_s"] = {
      {"compact_stall", v.rate("compact_stall")},           {"compact_fail", v.rate("compact_fail")},
      {"compact_success", v.rate("compact_success")},       {"allocstall", v.rate_prefix("allocstall_")},
      {"pgscan_direct", v.rate("pgscan_direct")},           {"pgsteal_direct", v.rate("pgsteal_direct")},
      {"pgsteal_kswapd", v.rate("pgsteal_kswapd")},         {"pgalloc", v.rate_prefix("pgalloc_")},
      {"thp_fault_fallback", v.rate("thp_fault_fallback")}, {"oom_kill", v.rate("oom_kill")}};
  if (s.psi) {
    auto line = [](const PsiLine& p) {
      return nlohmann::json{{"avg10", p.avg10}, {"avg60", p.avg60}, {"avg300", p.avg300}, {"total_us", p.total_us}};
    };
    j["psi_memory"] = {{"some", line(s.psi->some)}};
    if (s.psi->full) j["psi_memory"]["full"] = line(*s.psi->full);
  }
  if (iv.probes) {
    const MmSnapshot& p = *iv.probes;
    nlohmann::json lat;
    for (int k = 0; k < MM_HIST_KINDS; ++k)
      lat[hist_kind_name(static_cast<mm_hist_kind>(k))] = hist_json(p.hists[k], iv.seconds);
    nlohmann::json status;
    for (int st = 0; st < 9; ++st)
      if (p.counters.at(MM_C_COMPACT_STATUS + st))
        status[compact_result_name(st)] = p.counters.at(MM_C_COMPACT_STATUS + st);
    nlohmann::json fallback_orders = nlohmann::json::array();
    for (int o = 0; o < MM_ORDERS; ++o) fallback_orders.push_back(p.counters.at(MM_C_EXTFRAG_FALLBACK_ORDER + o));
    j["bpf"] = {{"latency", lat},
                {"compaction",
                 {{"runs", p.counters[MM_C_COMPACT_END]},
                  {"direct_runs", p.counters[MM_C_COMPACT_DIRECT_BEGIN]},
                  {"try_to_compact", p.counters[MM_C_COMPACT_TRY]},
                  {"migrate_scanned", p.counters[MM_C_COMPACT_MIGRATE_SCANNED]},
                  {"free_scanned", p.counters[MM_C_COMPACT_FREE_SCANNED]},
                  {"outcomes", status.is_null() ? nlohmann::json::object() : status}}},
                {"extfrag",
                 {{"fallbacks", p.counters[MM_C_EXTFRAG]},
                  {"fragmenting", p.counters[MM_C_EXTFRAG_FRAGMENTING]},
                  {"by_fallback_order", fallback_orders}}},
                {"oom",
                 {{"victims", p.counters[MM_C_OOM_VICTIM]},
                  {"reclaim_retry_zone", p.counters[MM_C_OOM_RECLAIM_RETRY]},
                  {"compact_retry", p.counters[MM_C_OOM_COMPACT_RETRY]}}},
                {"events_dropped", p.counters[MM_C_EVENTS_DROPPED]}};
  }
  nlohmann::json ev = nlohmann::json::array();
  for (const auto& e : f.events) ev.push_back(e.to_json());
  j["events"] = ev;
  if (f.deep) j["deep"] = deep_json(*f.deep);
  return j;
}

std::string monitor_text(const MonitorFrame& f, int width) {
  const TelemetryInterval& iv = *f.interval;
  const TelemetrySample& s = *iv.after;
  const MemInfo& m = s.mem;
  std::string out;
  auto line = [&out](const std::string& l) { out += l + "\n"; };
  line("spark-tune monitor  " + clock_time(s.wall) + "  every " + fmt("%.1fs", iv.seconds) + "  " + f.probe_status);
  double cache_rate =
      iv.seconds > 0 ? (static_cast<double>(m.cached()) - static_cast<double>(iv.before->mem.cached())) / iv.seconds
                     : 0;
  line("Memory     total " + format_size(m.total()) + "  available " + format_size(m.available()) + "  free " +
       format_size(m.free()) + "  anon " + format_size(m.anon()) + "  mlocked " + format_size(m.mlocked()));
  line("Page cache " + format_size(m.cached()) + " (" + (cache_rate >= 0 ? "+" : "-") +
       format_size(static_cast<uint64_t>(std::abs(cache_rate))) + "/s)  dirty " + format_size(m.dirty()) +
       "  writeback " + format_size(m.writeback()));

  // Free memory by order, all nodes, a bar per order scaled to the largest.
  auto blocks = s.buddy.free_blocks();
  std::vector<uint64_t> bytes(blocks.size());
  uint64_t most = 1;
  for (size_t o = 0; o < blocks.size(); ++o) {
    bytes[o] = (blocks[o] << o) * page_size();
    most = std::max(most, bytes[o]);
  }
  int bar_width = std::max(10, width - 44);
  line("Free memory by order (buddyinfo, all nodes):");
  for (size_t o = 0; o < blocks.size(); ++o) {
    int len = static_cast<int>(static_cast<double>(bytes[o]) / static_cast<double>(most) * bar_width);
    if (bytes[o] > 0 && len == 0) len = 1;
    std::string bar;
    for (int i = 0; i < len; ++i) bar += "\u2588";
    char head[64];
    std::snprintf(head, sizeof head, "  %2zu %9s %9s %10s ", o, format_size((uint64_t{1} << o) * page_size()).c_str(),
                  std::to_string(blocks[o]).c_str(), format_size(bytes[o]).c_str());
    line(head + bar);
  }
  // Fragmentation index of the high orders, per zone (skipping DMA).
  for (const auto& z : s.buddy.zones) {
    if (z.zone == "DMA") continue;
    std::string l = "Frag index node " + std::to_string(z.node) + " " + z.zone + ":";
    for (unsigned o = f.high_order > 2 ? f.high_order - 2 : 0; o < z.free.size(); ++o)
      l += "  o" + std::to_string(o) + " " + format_index(fragmentation_index(z.free, o));
    l += "   unusable o" + std::to_string(f.high_order) + " " + format_index(unusable_free_index(z.free, f.high_order));
    line(l);
  }
  const VmStatDelta& v = iv.vmstat;
  line("Per second compact stall " + fmt("%.1f", v.rate("compact_stall")) + " fail " +
       fmt("%.1f", v.rate("compact_fail")) + " success " + fmt("%.1f", v.rate("compact_success")) + "  allocstall " +
       fmt("%.1f", v.rate_prefix("allocstall_")) + "  pgscan_direct " + fmt("%.0f", v.rate("pgscan_direct")) +
       "  thp_fallback " + fmt("%.1f", v.rate("thp_fault_fallback")) + "  oom_kill " +
       std::to_string(v.get("oom_kill")));
  if (iv.probes) {
    const MmSnapshot& p = *iv.probes;
    std::string l = "Latency   ";
    for (int k = 0; k < MM_HIST_KINDS; ++k) {
      const auto& h = p.hists[k];
      l += std::string("  ") + hist_kind_name(static_cast<mm_hist_kind>(k)) + " n=" + std::to_string(h.count) +
           " p50 " + dur(h.quantile_ns(0.5)) + " p99 " + dur(h.quantile_ns(0.99));
    }
    line(l);
    line("eBPF      compaction runs " + std::to_string(p.counters[MM_C_COMPACT_END]) + " (direct " +
         std::to_string(p.counters[MM_C_COMPACT_DIRECT_BEGIN]) + ")  fallbacks " +
         std::to_string(p.counters[MM_C_EXTFRAG]) + " (fragmenting " +
         std::to_string(p.counters[MM_C_EXTFRAG_FRAGMENTING]) + ")  oom victims " +
         std::to_string(p.counters[MM_C_OOM_VICTIM]));
  }
  if (s.psi) {
    std::string l = "PSI memory some " + fmt("%.2f", s.psi->some.avg10) + "/" + fmt("%.2f", s.psi->some.avg60) + "/" +
                    fmt("%.2f", s.psi->some.avg300);
    if (s.psi->full)
      l += "  full " + fmt("%.2f", s.psi->full->avg10) + "/" + fmt("%.2f", s.psi->full->avg60) + "/" +
           fmt("%.2f", s.psi->full->avg300);
    line(l + "  (avg10/60/300 %)");
  }
  if (f.deep) {
    std::string l = "Deep " + fmt("%.1fs", f.deep->seconds) + " page allocations by order:";
    for (size_t o = 0; o < f.deep->orders.size(); ++o)
      if (f.deep->orders[o]) l += " o" + std::to_string(o) + "=" + std::to_string(f.deep->orders[o]);
    line(l);
    for (const auto& t : f.deep->top)
      line("  " + std::to_string(t.tgid) + " " + t.comm + ": " + std::to_string(t.calls) + " allocs, " +
           format_size(t.pages * page_size()));
  }
  line("Recent events:");
  if (f.recent.empty()) line("  none");
  for (const auto& e : f.recent) line("  " + clock_time(e.time) + " " + e.type + ": " + e.summary);
  return out;
}

}  // namespace spark::telemetry
