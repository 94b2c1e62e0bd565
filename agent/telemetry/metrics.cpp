#include "telemetry/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "telemetry/frag_index.h"

namespace spark::telemetry {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

MetricFamily family(const std::string& name, const std::string& help, MetricType type) {
  MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

void gauge(MetricFamily& f, Labels labels, double v) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = v;
  f.metric.push_back(std::move(m));
}

void counter(MetricFamily& f, Labels labels, double v) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  f.metric.push_back(std::move(m));
}

void histogram(MetricFamily& f, Labels labels, const LatencyHistogram& h) {
  ClientMetric m;
  m.label = std::move(labels);
  uint64_t cumulative = 0;
  // log2 slots: slot i holds [2^i, 2^(i+1)) ns, so its upper bound is 2^(i+1) ns.
  size_t last = 0;
  for (size_t i = 0; i < h.slots.size(); ++i)
    if (h.slots[i]) last = i;
  for (size_t i = 0; i <= std::max<size_t>(last, 10) && i < h.slots.size(); ++i) {
    cumulative += h.slots[i];
    m.histogram.bucket.push_back({cumulative, std::ldexp(1.0, static_cast<int>(i) + 1) / 1e9});
  }
  for (size_t i = std::max<size_t>(last, 10) + 1; i < h.slots.size(); ++i) cumulative += h.slots[i];
  m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = static_cast<double>(h.sum_ns) / 1e9;
  f.metric.push_back(std::move(m));
}

const char* const k_meminfo_fields[] = {"MemTotal", "MemFree",   "MemAvailable", "Buffers",     "Cached",
                                        "Dirty",    "Writeback", "AnonPages",    "Unevictable", "Mlocked",
                                        "Shmem",    "SwapTotal", "SwapFree"};
const char* const k_vmstat_prefixes[] = {"compact_",   "allocstall_",        "pgscan_direct",   "pgsteal_",
                                         "pgalloc_",   "thp_fault_fallback", "thp_fault_alloc", "oom_kill",
                                         "pgmajfault", "drop_pagecache"};

}  // namespace

std::vector<MetricFamily> collect_metrics(const TelemetrySample& s, const MetricsExtras& extras) {
  std::vector<MetricFamily> out;
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));

  auto mem = family("spark_tune_memory_bytes", "/proc/meminfo fields in bytes", MetricType::Gauge);
  for (const char* f : k_meminfo_fields)
    if (auto v = s.mem.get(f)) gauge(mem, {{"field", f}}, static_cast<double>(*v));
  out.push_back(std::move(mem));

  auto blocks =
      family("spark_tune_buddy_free_blocks", "free blocks of 2^order pages (/proc/buddyinfo)", MetricType::Gauge);
  auto bytes = family("spark_tune_buddy_free_bytes", "free memory per zone (/proc/buddyinfo)", MetricType::Gauge);
  auto fi = family("spark_tune_fragmentation_index",
                   "kernel extfrag index per order: -1 the allocation would succeed, towards 0 lack of memory, "
                   "towards 1 fragmentation",
                   MetricType::Gauge);
  auto ui = family("spark_tune_unusable_free_index", "share of free memory unusable for an allocation of this order",
                   MetricType::Gauge);
  for (const auto& z : s.buddy.zones) {
    std::string node = std::to_string(z.node);
    gauge(bytes, {{"node", node}, {"zone", z.zone}}, static_cast<double>(z.free_pages()) * page);
    for (unsigned o = 0; o < z.free.size(); ++o) {
      Labels l{{"node", node}, {"zone", z.zone}, {"order", std::to_string(o)}};
      gauge(blocks, l, static_cast<double>(z.free[o]));
      gauge(fi, l, fragmentation_index(z.free, o) / 1000.0);
      gauge(ui, l, unusable_free_index(z.free, o) / 1000.0);
    }
  }
  out.push_back(std::move(blocks));
  out.push_back(std::move(bytes));
  out.push_back(std::move(fi));
  out.push_back(std::move(ui));

  auto vm = family("spark_tune_vmstat_total", "/proc/vmstat event counters", MetricType::Counter);
  for (const auto& [name, v] : s.vmstat.counters)
    for (const char* p : k_vmstat_prefixes)
      if (name.rfind(p, 0) == 0) {
        counter(vm, {{"counter", name}}, static_cast<double>(v));
        break;
      }
  out.push_back(std::move(vm));

  if (s.psi) {
    auto total = family("spark_tune_psi_memory_stall_seconds_total", "time some/all tasks stalled on memory (PSI)",
                        MetricType::Counter);
    // Base units: the kernel's percent as a ratio 0..1 (its two decimals stay exact: 1.50 -> 0.015).
    auto avg =
        family("spark_tune_psi_memory_avg_ratio",
               "PSI memory running averages: share of time (0..1) some/all tasks stalled on memory", MetricType::Gauge);
    auto ratio = [](double percent) { return std::round(percent * 100.0) / 10000.0; };
    auto add = [&](const char* kind, const PsiLine& p) {
      counter(total, {{"kind", kind}}, static_cast<double>(p.total_us) / 1e6);
      gauge(avg, {{"kind", kind}, {"window", "10s"}}, ratio(p.avg10));
      gauge(avg, {{"kind", kind}, {"window", "60s"}}, ratio(p.avg60));
      gauge(avg, {{"kind", kind}, {"window", "300s"}}, ratio(p.avg300));
    };
    add("some", s.psi->some);
    if (s.psi->full) add("full", *s.psi->full);
    out.push_back(std::move(total));
    out.push_back(std::move(avg));
  }

  auto attached = family("spark_tune_bpf_probes_attached", "eBPF probes attached (0: procfs only)", MetricType::Gauge);
  gauge(attached, {}, static_cast<double>(extras.probes_attached));
  out.push_back(std::move(attached));
  auto total_probes = family("spark_tune_bpf_probes", "eBPF probes known", MetricType::Gauge);
  gauge(total_probes, {}, static_cast<double>(extras.probes_total));
  out.push_back(std::move(total_probes));

  if (s.probes) {
    const MmSnapshot& p = *s.probes;
    // The orders this host's buddy allocator has (buddyinfo columns; 11 on most).
    size_t host_orders = 0;
    for (const auto& z : s.buddy.zones) host_orders = std::max(host_orders, z.free.size());
    auto reclaim = family("spark_tune_reclaim_latency_seconds",
                          "time allocating tasks spent in direct or memcg reclaim", MetricType::Histogram);
    histogram(reclaim, {{"kind", "direct"}}, p.hists[MM_HIST_DIRECT_RECLAIM]);
    histogram(reclaim, {{"kind", "memcg"}}, p.hists[MM_HIST_MEMCG_RECLAIM]);
    out.push_back(std::move(reclaim));
    auto compaction = family("spark_tune_compaction_latency_seconds", "time in compact_zone(), direct or other",
                             MetricType::Histogram);
    histogram(compaction, {{"kind", "direct"}}, p.hists[MM_HIST_COMPACTION_DIRECT]);
    histogram(compaction, {{"kind", "other"}}, p.hists[MM_HIST_COMPACTION_OTHER]);
    out.push_back(std::move(compaction));

    auto runs = family("spark_tune_compaction_runs_total", "compact_zone() runs by outcome", MetricType::Counter);
    for (int st = 0; st < 9; ++st)
      counter(runs, {{"outcome", compact_result_name(st)}},
              static_cast<double>(p.counters.at(MM_C_COMPACT_STATUS + st)));
    out.push_back(std::move(runs));
    auto scanned =
        family("spark_tune_compaction_scanned_pages_total", "pages scanned by compaction", MetricType::Counter);
    counter(scanned, {{"scanner", "migrate"}}, static_cast<double>(p.counters[MM_C_COMPACT_MIGRATE_SCANNED]));
    counter(scanned, {{"scanner", "free"}}, static_cast<double>(p.counters[MM_C_COMPACT_FREE_SCANNED]));
    out.push_back(std::move(scanned));
    auto tries =
        family("spark_tune_direct_compaction_total", "direct compaction attempts by order", MetricType::Counter);
    // Every order the host has, 0 included (rate() needs the series before the first count);
    // past those only orders that counted.
    for (int o = 0; o < MM_ORDERS; ++o)
      if (uint64_t v = p.counters.at(MM_C_COMPACT_TRY_ORDER + o); v || static_cast<size_t>(o) < host_orders)
        counter(tries, {{"order", std::to_string(o)}}, static_cast<double>(v));
    out.push_back(std::move(tries));
    auto fallbacks =
        family("spark_tune_extfrag_fallbacks_total", "migrate-type fallbacks by fallback order", MetricType::Counter);
    for (int o = 0; o < MM_ORDERS; ++o)
      if (uint64_t v = p.counters.at(MM_C_EXTFRAG_FALLBACK_ORDER + o); v || static_cast<size_t>(o) < host_orders)
        counter(fallbacks, {{"fallback_order", std::to_string(o)}}, static_cast<double>(v));
    out.push_back(std::move(fallbacks));
    auto fragmenting =
        family("spark_tune_extfrag_fragmenting_total",
               "fallbacks that split a pageblock (fallback order < pageblock order)", MetricType::Counter);
    counter(fragmenting, {}, static_cast<double>(p.counters[MM_C_EXTFRAG_FRAGMENTING]));
    out.push_back(std::move(fragmenting));
    auto oom = family("spark_tune_oom_victims_total", "tasks chosen by the OOM killer", MetricType::Counter);
    counter(oom, {}, static_cast<double>(p.counters[MM_C_OOM_VICTIM]));
    out.push_back(std::move(oom));
    auto retries = family("spark_tune_oom_retries_total", "allocator retries before OOM", MetricType::Counter);
    counter(retries, {{"kind", "reclaim"}}, static_cast<double>(p.counters[MM_C_OOM_RECLAIM_RETRY]));
    counter(retries, {{"kind", "compaction"}}, static_cast<double>(p.counters[MM_C_OOM_COMPACT_RETRY]));
    out.push_back(std::move(retries));
    auto dropped =
        family("spark_tune_bpf_events_dropped_total", "events lost to a full ring buffer", MetricType::Counter);
    counter(dropped, {}, static_cast<double>(p.counters[MM_C_EVENTS_DROPPED]));
    out.push_back(std::move(dropped));
  }

  auto detected =
      family("spark_tune_detected_events_total", "events raised by the stall detector", MetricType::Counter);
  for (const char* kind : {"fragmentation_stall", "reclaim_storm", "pagecache_flood", "oom_kill", "deep_report"}) {
    auto it = extras.detected_events_total.find(kind);
    counter(detected, {{"event", kind}},
            it == extras.detected_events_total.end() ? 0.0 : static_cast<double>(it->second));
  }
  out.push_back(std::move(detected));

  auto deep = family("spark_tune_deep_mode_attached", "deep mode (kmem:mm_page_alloc) attached now, by the detector",
                     MetricType::Gauge);
  gauge(deep, {}, extras.deep_attached ? 1 : 0);
  out.push_back(std::move(deep));
  if (extras.last_deep) {
    auto by_order = family("spark_tune_deep_last_allocations",
                           "page allocations by order during the last deep-mode period", MetricType::Gauge);
    for (size_t o = 0; o < extras.last_deep->orders.size(); ++o)
      if (o <= 10 || extras.last_deep->orders[o])
        gauge(by_order, {{"order", std::to_string(o)}}, static_cast<double>(extras.last_deep->orders[o]));
    out.push_back(std::move(by_order));
    auto tasks = family("spark_tune_deep_last_task_pages",
                        "pages allocated by the top tasks during the last deep-mode period", MetricType::Gauge);
    for (const auto& t : extras.last_deep->top)
      gauge(tasks, {{"pid", std::to_string(t.tgid)}, {"comm", t.comm}}, static_cast<double>(t.pages));
    out.push_back(std::move(tasks));
  }
  return out;
}

namespace {

// The shortest text that reads back as the same double (std::to_chars): 9 / 1000.0 is "0.009",
// where prometheus-cpp's serializer printed 16 digits ("0.008999999999999999").
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

std::string escaped(const std::string& s, bool quote) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (quote && c == '"')
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

void sample_line(std::string& out, const std::string& name, const Labels& labels, const std::string& value,
                 const ClientMetric::Label* extra = nullptr) {
  out += name;
  if (!labels.empty() || extra) {
    out += '{';
    bool first = true;
    auto add = [&](const ClientMetric::Label& l) {
      if (!first) out += ',';
      first = false;
      out += l.name + "=\"" + escaped(l.value, true) + '"';
    };
    for (const auto& l : labels) add(l);
    if (extra) add(*extra);
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

const char* type_name(MetricType t) {
  switch (t) {
    case MetricType::Counter:
      return "counter";
    case MetricType::Gauge:
      return "gauge";
    case MetricType::Histogram:
      return "histogram";
    case MetricType::Summary:
      return "summary";
    default:
      return "untyped";
  }
}

}  // namespace

// The text exposition format (version 0.0.4) of the families.
std::string render_families(const std::vector<MetricFamily>& families) {
  std::string out;
  for (const auto& f : families) {
    out += "# HELP " + f.name + " " + escaped(f.help, false) + "\n";
    out += "# TYPE " + f.name + " " + type_name(f.type) + "\n";
    for (const auto& m : f.metric) {
      switch (f.type) {
        case MetricType::Counter:
          sample_line(out, f.name, m.label, number(m.counter.value));
          break;
        case MetricType::Gauge:
          sample_line(out, f.name, m.label, number(m.gauge.value));
          break;
        case MetricType::Histogram: {
          for (const auto& b : m.histogram.bucket) {
            ClientMetric::Label le{"le", number(b.upper_bound)};
            sample_line(out, f.name + "_bucket", m.label, std::to_string(b.cumulative_count), &le);
          }
          sample_line(out, f.name + "_sum", m.label, number(m.histogram.sample_sum));
          sample_line(out, f.name + "_count", m.label, std::to_string(m.histogram.sample_count));
          break;
        }
        case MetricType::Summary: {
          for (const auto& q : m.summary.quantile) {
            ClientMetric::Label l{"quantile", number(q.quantile)};
            sample_line(out, f.name, m.label, number(q.value), &l);
          }
          sample_line(out, f.name + "_sum", m.label, number(m.summary.sample_sum));
          sample_line(out, f.name + "_count", m.label, std::to_string(m.summary.sample_count));
          break;
        }
        default:
          sample_line(out, f.name, m.label, number(m.untyped.value));
          break;
      }
    }
  }
  return out;
}

std::string render_metrics(const TelemetrySample& s, const MetricsExtras& extras) {
  return render_families(collect_metrics(s, extras));
}

}  // namespace spark::telemetry
