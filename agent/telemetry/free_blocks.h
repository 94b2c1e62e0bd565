// `preflight --blocks COUNTxSIZE` (issue 14 part 4): does the host have COUNT free blocks of at least
// SIZE contiguous bytes (a fleet gates its loads on 200 free blocks of 32 MiB)? Counted from
// /proc/buddyinfo; if short, memory is compacted once (a trigger through the actuator, logged with
// who asked) and counted again. Verdict: go (enough), compacted (enough after compaction), reboot
// (fragmentation compaction cannot undo: what a fleet needed after days of uptime).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/host_paths.h"
#include "core/result.h"
#include "telemetry/buddyinfo.h"
#include "tune/actuator.h"

namespace spark::telemetry {

struct BlocksAsk {
  uint64_t count = 0;
  uint64_t size = 0;   // bytes asked
  unsigned order = 0;  // smallest buddy order whose blocks hold `size`
  std::string text;    // as given
};

// "200x32M", "200 x 32MiB": COUNT >= 1, SIZE a size of at least one page. `orders`: how many orders
// the kernel has (buddyinfo's columns); a SIZE above the largest order's block is an input error.
Result<BlocksAsk> parse_blocks(const std::string& text, uint64_t page_size, size_t orders);

// Free blocks of 2^order pages the buddy allocator can hand out without splitting smaller ones:
// sum over zones and orders o >= order of free[o] << (o - order).
uint64_t count_free_blocks(const BuddyInfo& buddy, unsigned order);

enum class BlocksVerdict { go, compacted, reboot };
const char* blocks_verdict_name(BlocksVerdict v);

struct BlocksReport {
  BlocksAsk ask;
  uint64_t before = 0;
  std::optional<uint64_t> after;  // set when compaction ran
  BlocksVerdict verdict = BlocksVerdict::go;
  std::string compact_error;  // compaction could not be asked for (then the verdict is reboot)
  nlohmann::json to_json() const;
  std::string to_text() const;
};

// Counts, compacts once through `act` if short, counts again.
Result<BlocksReport> check_blocks(const HostPaths& paths, tune::Actuator& act, const BlocksAsk& ask);

}  // namespace spark::telemetry
