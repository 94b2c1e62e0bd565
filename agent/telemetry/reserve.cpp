#include "telemetry/reserve.h"

#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "core/fs.h"
#include "core/units.h"

using spark::state::TargetKind;

using spark::tune::Change;

namespace spark::telemetry {

Result<std::vector<ZoneWatermarks>> parse_zoneinfo(const std::string& text) {
  std::vector<ZoneWatermarks> zones;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string first;
    l >> first;
    if (first == "Node") {
      ZoneWatermarks z;
      std::string node, word;
      l >> node >> word >> z.zone;
      if (!node.empty() && node.back() == ',') node.pop_back();
      try {
        z.node = std::stoi(node);
      } catch (...) {
        return input_error("zoneinfo: bad line '" + line + "'");
      }
      zones.push_back(z);
      continue;
    }
    if (zones.empty()) continue;
    auto& z = zones.back();
    auto num = [&](uint64_t& out) {
      std::string v;
      l >> v;
      if (!v.empty() && v.back() == ',') v.pop_back();
      try {
        out = std::stoull(v);
      } catch (...) {
      }
    };
    if (first == "min")
      num(z.min);
    else if (first == "low")
      num(z.low);
    else if (first == "high")
      num(z.high);
    else if (first == "managed")
      num(z.managed);
    else if (first == "protection:") {
      std::string rest;
      std::getline(l, rest);
      for (char& c : rest)
        if (c == '(' || c == ')' || c == ',') c = ' ';
      std::istringstream p(rest);
      uint64_t v;
      while (p >> v) z.max_protection = std::max(z.max_protection, v);
    }
  }
  if (zones.empty()) return input_error("zoneinfo: no zone found");
  return zones;
}

Result<std::vector<ZoneWatermarks>> read_zoneinfo(const HostPaths& paths) {
  auto text = read_file(paths.proc / "zoneinfo");
  if (!text) return with_context(text.error(), "reading zoneinfo");
  return parse_zoneinfo(*text);
}

namespace {
bool lowmem(const ZoneWatermarks& z) { return z.zone != "Movable" && z.zone != "HighMem"; }
}  // namespace

std::vector<ZoneWatermarks> watermarks_for(const std::vector<ZoneWatermarks>& zones, uint64_t min_free_kbytes,
                                           uint64_t wsf, uint64_t page_size) {
  uint64_t pages_min = min_free_kbytes / (page_size / 1024);
  uint64_t lowmem_pages = 0;
  for (const auto& z : zones)
    if (lowmem(z)) lowmem_pages += z.managed;
  std::vector<ZoneWatermarks> out = zones;
  for (auto& z : out) {
    uint64_t tmp = lowmem_pages ? pages_min * z.managed / lowmem_pages : 0;
    if (!lowmem(z))
      z.min = std::clamp<uint64_t>(z.managed / 1024, 32, 128);
    else
      z.min = tmp;
    tmp = std::max<uint64_t>(tmp >> 2, z.managed * wsf / 10000);
    z.low = z.min + tmp;
    z.high = z.low + tmp;
  }
  return out;
}

uint64_t total_reserve_pages(const std::vector<ZoneWatermarks>& zones) {
  uint64_t sum = 0;
  for (const auto& z : zones) sum += std::min(z.managed, z.high + z.max_protection);
  return sum;
}

uint64_t low_watermark_pages(const std::vector<ZoneWatermarks>& zones) {
  uint64_t sum = 0;
  for (const auto& z : zones) sum += z.low;
  return sum;
}

OverlayReserve overlay_reserve(const std::vector<ZoneWatermarks>& zones, const MemInfo& mem, uint64_t min_free_now,
                               uint64_t min_free_under, uint64_t wsf_now, uint64_t wsf_under, uint64_t page_size) {
  OverlayReserve r;
  r.min_free_kbytes_now = min_free_now;
  r.min_free_kbytes_under = min_free_under;
  r.scale_factor_now = wsf_now;
  r.scale_factor_under = wsf_under;
  auto under = watermarks_for(zones, min_free_under, wsf_under, page_size);
  // "now" from the zones as read (boost included), so that a no-op overlay takes nothing.
  r.reserve_now = total_reserve_pages(zones) * page_size;
  r.reserve_under = total_reserve_pages(under) * page_size;
  uint64_t low_now = low_watermark_pages(zones) * page_size, low_under = low_watermark_pages(under) * page_size;
  uint64_t pagecache = mem.value("Active(file)") + mem.value("Inactive(file)");
  uint64_t reclaimable = mem.get("KReclaimable").value_or(mem.value("SReclaimable"));
  auto held = [](uint64_t pool, uint64_t low) { return std::min(pool / 2, low); };
  int64_t delta = static_cast<int64_t>(r.reserve_under) - static_cast<int64_t>(r.reserve_now) +
                  static_cast<int64_t>(held(pagecache, low_under)) - static_cast<int64_t>(held(pagecache, low_now)) +
                  static_cast<int64_t>(held(reclaimable, low_under)) - static_cast<int64_t>(held(reclaimable, low_now));
  r.available_now = mem.available();
  int64_t after = static_cast<int64_t>(r.available_now) - delta;
  r.available_under = after < 0 ? 0 : static_cast<uint64_t>(after);
  return r;
}

Result<OverlayReserve> overlay_reserve(const HostPaths& paths, const std::vector<Change>& overlay, uint64_t page_size) {
  if (!page_size) page_size = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  SPARK_TRY(auto zones, read_zoneinfo(paths));
  SPARK_TRY(MemInfo mem, read_meminfo(paths));
  auto current = [&](const char* key) -> Result<uint64_t> {
    auto v = read_file(paths.proc_sys(std::string(key)));
    if (!v) return with_context(v.error(), "reading " + std::string(key));
    try {
      return static_cast<uint64_t>(std::stoull(trim(*v)));
    } catch (...) {
      return input_error(std::string(key) + ": not a number: " + *v);
    }
  };
  SPARK_TRY(uint64_t mfk, current("vm/min_free_kbytes"));
  SPARK_TRY(uint64_t wsf, current("vm/watermark_scale_factor"));
  uint64_t mfk_under = mfk, wsf_under = wsf;
  for (const auto& c : overlay) {
    if (c.target.kind != TargetKind::sysctl || !c.value) continue;
    uint64_t v = 0;
    try {
      v = std::stoull(trim(*c.value));
    } catch (...) {
      continue;
    }
    if (c.target.name == "vm.min_free_kbytes") mfk_under = v;
    if (c.target.name == "vm.watermark_scale_factor") wsf_under = v;
  }
  return overlay_reserve(zones, mem, mfk, mfk_under, wsf, wsf_under, page_size);
}

nlohmann::json OverlayReserve::to_json() const {
  return {{"min_free_kbytes", {{"now", min_free_kbytes_now}, {"under_overlay", min_free_kbytes_under}}},
          {"watermark_scale_factor", {{"now", scale_factor_now}, {"under_overlay", scale_factor_under}}},
          {"reserve_bytes", {{"now", reserve_now}, {"under_overlay", reserve_under}}},
          {"reserve_increase_bytes", reserve_increase()},
          {"available_bytes", {{"now", available_now}, {"under_overlay", available_under}}},
          {"takes_bytes", takes()}};
}

std::string OverlayReserve::to_text() const {
  std::ostringstream o;
  o << "overlay reserve: " << format_size(reserve_under) << " (" << format_size(reserve_increase())
    << " more than now; vm.min_free_kbytes " << min_free_kbytes_now << " -> " << min_free_kbytes_under
    << ", vm.watermark_scale_factor " << scale_factor_now << " -> " << scale_factor_under << "): MemAvailable "
    << format_size(available_now) << " -> " << format_size(available_under) << " under it";
  return o.str();
}

}  // namespace spark::telemetry
