#include "telemetry/free_blocks.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "core/fs.h"
#include "core/units.h"
#include "tune/trigger.h"

using spark::tune::Actuator, spark::tune::compact_memory;

namespace spark::telemetry {

Result<BlocksAsk> parse_blocks(const std::string& text, uint64_t page_size, size_t orders) {
  auto bad = [&](const std::string& why) {
    return input_error("--blocks '" + text + "': " + why + " (expected COUNTxSIZE, e.g. 200x32M)");
  };
  std::string t;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) t += c;
  auto x = t.find_first_of("xX*");
  if (x == std::string::npos || x == 0 || x + 1 == t.size()) return bad("no COUNT and SIZE");
  std::string count = t.substr(0, x), size = t.substr(x + 1);
  if (count.find_first_not_of("0123456789") != std::string::npos || count.size() > 12)
    return bad("COUNT is not a number");
  BlocksAsk a;
  a.text = text;
  a.count = std::stoull(count);
  if (a.count == 0) return bad("COUNT must be at least 1");
  auto s = parse_size(size);
  if (!s) return bad(describe(s.error()));
  a.size = *s;
  if (a.size < page_size) return bad("SIZE is below one page (" + format_size(page_size) + ")");
  while ((page_size << a.order) < a.size) ++a.order;
  if (orders == 0 || a.order >= orders)
    return input_error("--blocks '" + text + "': SIZE is larger than the largest block this kernel keeps (" +
                       format_size(page_size << (orders ? orders - 1 : 0)) + ", order " +
                       std::to_string(orders ? orders - 1 : 0) + "); ask for blocks of at most that size");
  return a;
}

uint64_t count_free_blocks(const BuddyInfo& buddy, unsigned order) {
  uint64_t n = 0;
  for (const auto& z : buddy.zones)
    for (size_t o = order; o < z.free.size(); ++o) n += z.free[o] << (o - order);
  return n;
}

const char* blocks_verdict_name(BlocksVerdict v) {
  switch (v) {
    case BlocksVerdict::go:
      return "go";
    case BlocksVerdict::compacted:
      return "compacted";
    case BlocksVerdict::reboot:
      return "reboot";
  }
  return "?";
}

Result<BlocksReport> check_blocks(const HostPaths& paths, Actuator& act, const BlocksAsk& ask) {
  BlocksReport r;
  r.ask = ask;
  SPARK_TRY(BuddyInfo b, read_buddyinfo(paths));
  r.before = count_free_blocks(b, ask.order);
  if (r.before >= ask.count) return r;
  auto c = compact_memory(act, "preflight", "--blocks " + ask.text + ": " + std::to_string(r.before) + " free");
  if (!c) {
    r.compact_error = describe(c.error());
    r.verdict = BlocksVerdict::reboot;
    return r;
  }
  SPARK_TRY(BuddyInfo again, read_buddyinfo(paths));
  r.after = count_free_blocks(again, ask.order);
  r.verdict = *r.after >= ask.count ? BlocksVerdict::compacted : BlocksVerdict::reboot;
  return r;
}

nlohmann::json BlocksReport::to_json() const {
  nlohmann::json j = {{"verdict", blocks_verdict_name(verdict)},
                      {"count", ask.count},
                      {"size", ask.size},
                      {"order", ask.order},
                      {"free_blocks", before},
                      {"compacted", after.has_value()}};
  if (after) j["free_blocks_after_compaction"] = *after;
  if (!compact_error.empty()) j["compact_error"] = compact_error;
  return j;
}

std::string BlocksReport::to_text() const {
  std::ostringstream o;
  o << "blocks: " << blocks_verdict_name(verdict) << ": " << ask.count << " free blocks of " << format_size(ask.size)
    << " wanted, " << before << " free";
  if (after) o << ", " << *after << " after compaction";
  if (!compact_error.empty()) o << "; compaction failed: " << compact_error;
  if (verdict == BlocksVerdict::reboot)
    o << "\n  compaction cannot give those blocks back: stop what holds memory, or reboot the host before the load";
  return o.str() + "\n";
}

}  // namespace spark::telemetry
