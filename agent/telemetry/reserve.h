// What the load-window overlay reserves (issue 14 part 4): raising vm.min_free_kbytes and
// vm.watermark_scale_factor raises every zone's watermarks, and MemAvailable drops by more than the
// reserve itself (the kernel subtracts the high watermarks and, from page cache and reclaimable slab,
// the low watermarks). An engine's start-up check (vLLM's) sees that lower figure, so `window begin`,
// `run` and `preflight` say how much the overlay takes and what MemAvailable will be under it.
//
// The watermarks are computed as the kernel does (mm/page_alloc.c __setup_per_zone_wmarks,
// calculate_totalreserve_pages; mm/show_mem.c si_mem_available) from each zone's managed pages and
// lowmem reserve in /proc/zoneinfo.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/host_paths.h"
#include "core/meminfo.h"
#include "core/result.h"
#include "tune/tuner.h"

namespace spark::telemetry {

struct ZoneWatermarks {
  int node = 0;
  std::string zone;                     // "DMA", "DMA32", "Normal", "Movable", "Device"
  uint64_t managed = 0;                 // pages
  uint64_t min = 0, low = 0, high = 0;  // pages, as printed (boost included)
  uint64_t max_protection = 0;          // largest lowmem_reserve entry, pages
};

// Every zone of /proc/zoneinfo ("Node N, zone NAME" blocks with min/low/high/managed/protection).
Result<std::vector<ZoneWatermarks>> parse_zoneinfo(const std::string& text);
Result<std::vector<ZoneWatermarks>> read_zoneinfo(const HostPaths& paths);

// The watermarks the kernel sets for these zones under min_free_kbytes and watermark_scale_factor.
std::vector<ZoneWatermarks> watermarks_for(const std::vector<ZoneWatermarks>& zones, uint64_t min_free_kbytes,
                                           uint64_t watermark_scale_factor, uint64_t page_size);
// totalreserve_pages: sum over zones of min(managed, high + largest lowmem reserve).
uint64_t total_reserve_pages(const std::vector<ZoneWatermarks>& zones);
uint64_t low_watermark_pages(const std::vector<ZoneWatermarks>& zones);

struct OverlayReserve {
  uint64_t min_free_kbytes_now = 0, min_free_kbytes_under = 0;
  uint64_t scale_factor_now = 0, scale_factor_under = 0;
  uint64_t reserve_now = 0, reserve_under = 0;      // bytes: the kernel's total reserve (high watermarks)
  uint64_t available_now = 0, available_under = 0;  // MemAvailable now, and once the overlay is on
  // What the overlay takes from MemAvailable (available_now - available_under).
  uint64_t takes() const { return available_now > available_under ? available_now - available_under : 0; }
  uint64_t reserve_increase() const { return reserve_under > reserve_now ? reserve_under - reserve_now : 0; }
  nlohmann::json to_json() const;
  // "the overlay reserves 1.2 GiB more (min_free_kbytes 66 MiB -> 480 MiB, ...): MemAvailable 20 GiB -> 18.8 GiB"
  std::string to_text() const;
};

// From figures (tests): the zones as they are now (their watermarks those of *_now), meminfo now.
OverlayReserve overlay_reserve(const std::vector<ZoneWatermarks>& zones, const MemInfo& mem, uint64_t min_free_now,
                               uint64_t min_free_under, uint64_t wsf_now, uint64_t wsf_under, uint64_t page_size);
// From the host: the overlay's vm.min_free_kbytes / vm.watermark_scale_factor (a key it does not
// change keeps its current value) against /proc/zoneinfo, /proc/meminfo and the current sysctls.
Result<OverlayReserve> overlay_reserve(const HostPaths& paths, const std::vector<tune::Change>& overlay,
                                       uint64_t page_size = 0);

}  // namespace spark::telemetry
