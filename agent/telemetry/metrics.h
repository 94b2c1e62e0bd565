// Prometheus text exposition of the telemetry: prometheus-cpp's data model (plain structs, header
// only), written out here so that values print as the shortest text that reads back exactly
// (0.009, not prometheus-cpp's 0.008999999999999999).
// The agent serves render_metrics() at /metrics; values are cumulative where the kernel's are
// (counters), so Prometheus computes the rates.
#pragma once

#include <prometheus/metric_family.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "telemetry/sample.h"

namespace spark::telemetry {

struct MetricsExtras {
  size_t probes_attached = 0;
  size_t probes_total = 0;
  std::map<std::string, uint64_t> detected_events_total;  // by event kind
  bool deep_attached = false;                             // deep mode attached now
  const DeepReport* last_deep = nullptr;                  // the last deep period's report, if any
};

std::vector<prometheus::MetricFamily> collect_metrics(const TelemetrySample& s, const MetricsExtras& extras);
std::string render_metrics(const TelemetrySample& s, const MetricsExtras& extras);
// The text exposition format 0.0.4 of any families.
std::string render_families(const std::vector<prometheus::MetricFamily>& families);

}  // namespace spark::telemetry
