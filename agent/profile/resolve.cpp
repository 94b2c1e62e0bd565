#include "profile/resolve.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/fs.h"
#include "core/meminfo.h"
#include "core/units.h"

using spark::state::sysctl_target;

using spark::tune::Actuator, spark::tune::Change, spark::tune::coupled_sysctl, spark::tune::normalize_value;

namespace spark::profile {

namespace {

Result<int64_t> parse_int(const std::string& s) {
  int64_t v = 0;
  auto t = trim(s);
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || p != t.data() + t.size()) return input_error("'" + s + "' is not an integer");
  return v;
}

// A size-like text to the key's unit: "5G" -> KiB or bytes; "4% of ram" -> of MemTotal.
Result<int64_t> amount(const KeyInfo& key, const std::string& text, const MemInfo& host) {
  uint64_t unit = key.type == KeyType::kbytes ? 1024 : 1;
  if (auto pct = parse_percentage(text)) {
    if (key.type != KeyType::kbytes && key.type != KeyType::bytes)
      return input_error(key.name + " is not an amount of memory: '" + text + "' does not apply (write a number)");
    if (pct->base != "ram") return input_error("'" + text + "': a profile value can be a percentage 'of ram' only");
    if (pct->percent < 0 || pct->percent > 100) return input_error("'" + text + "': percentage out of 0..100");
    return static_cast<int64_t>(std::llround(static_cast<double>(host.total()) * pct->percent / 100.0 / unit));
  }
  bool has_unit =
      std::any_of(text.begin(), text.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); });
  if (has_unit) {
    if (key.type != KeyType::kbytes && key.type != KeyType::bytes)
      return input_error(key.name + " takes a plain number, not '" + text + "'");
    SPARK_TRY(uint64_t bytes, parse_size(text));
    return static_cast<int64_t>(bytes / unit);
  }
  return parse_int(text);
}

}  // namespace

Result<std::string> resolve_value(const SettingSpec& spec, const MemInfo& host) {
  const KeyInfo& key = spec.key;
  std::string text = trim(spec.raw);
  if (!text.empty() && (text[0] == '>' || text[0] == '<')) text = trim(text.substr(1));
  auto fail = [&](const Error& e) { return input_error(spec.source + ": " + key.name + ": " + e.what()); };
  if (key.type == KeyType::text) return text;
  if (key.type == KeyType::choice) {
    if (std::find(key.choices.begin(), key.choices.end(), text) == key.choices.end()) {
      std::string all;
      for (const auto& c : key.choices) all += (all.empty() ? "" : ", ") + c;
      return input_error(spec.source + ": " + key.name + " = '" + text + "' is not one of: " + all);
    }
    return text;
  }
  auto v = amount(key, text, host);
  if (!v) return fail(v.error());
  int64_t value = *v;
  if (spec.min) {
    auto m = amount(key, *spec.min, host);
    if (!m) return fail(m.error());
    value = std::max(value, *m);
  }
  if (spec.max) {
    auto m = amount(key, *spec.max, host);
    if (!m) return fail(m.error());
    value = std::min(value, *m);
  }
  if (value < key.min || value > key.max)
    return input_error(spec.source + ": " + key.name + " = " + std::to_string(value) +
                       " is outside the kernel's range " + std::to_string(key.min) + ".." + std::to_string(key.max));
  return std::to_string(value);
}

Result<ResolvedProfile> resolve_profile(const std::vector<Profile>& chain, const MemInfo& host, Actuator& act) {
  ResolvedProfile out;
  if (chain.empty()) return input_error("empty profile chain");
  out.name = chain.back().name;
  std::vector<const SettingSpec*> winners;  // in first-seen order, child overriding in place
  for (const auto& p : chain) {
    out.chain.push_back(p.name);
    for (const auto& s : p.settings) {
      auto it =
          std::find_if(winners.begin(), winners.end(), [&](const SettingSpec* w) { return w->key.name == s.key.name; });
      if (it == winners.end())
        winners.push_back(&s);
      else
        *it = &s;
    }
    for (const auto& [k, v] : p.options) out.options[k] = v;
  }
  for (const SettingSpec* s : winners) {
    ResolvedSetting r;
    r.key = s->key.name;
    r.target = s->key.target;
    r.raw = s->raw;
    r.source = s->source;
    SPARK_TRY(r.value, resolve_value(*s, host));
    SPARK_TRY(auto cur, act.read(r.target));
    r.current = cur.value_or("");
    r.action = normalize_value(r.current) == normalize_value(r.value) ? "keep" : "set";
    std::string raw = trim(s->raw);
    if (!raw.empty() && (raw[0] == '>' || raw[0] == '<') && r.action == "set") {
      auto cur_n = parse_int(r.current);
      auto want = parse_int(r.value);
      if (!cur_n || !want) return input_error(s->source + ": " + r.key + ": '>'/'<' need numeric values");
      bool raise = raw[0] == '>';
      if ((raise && *cur_n >= *want) || (!raise && *cur_n <= *want)) {
        r.value = r.current;
        r.action = raise ? "keep (only raise)" : "keep (only lower)";
      }
    }
    out.settings.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> guardrail_violations(const ResolvedProfile& p, const MemInfo& host, Actuator& act) {
  std::vector<std::string> why;
  auto sets = [&](const std::string& key) {
    return std::any_of(p.settings.begin(), p.settings.end(), [&](const ResolvedSetting& s) { return s.key == key; });
  };
  // The value each key has after apply: the profile's, else the host's.
  auto effective = [&](const std::string& key) -> std::optional<int64_t> {
    for (const auto& s : p.settings)
      if (s.key == key) {
        auto v = parse_int(s.value);
        return v ? std::optional<int64_t>(*v) : std::nullopt;
      }
    // Setting one of a coupled pair to non-zero makes the kernel zero the other.
    if (auto sib = coupled_sysctl(key); sib && sets(*sib)) {
      for (const auto& s : p.settings)
        if (s.key == *sib && s.value != "0") return std::optional<int64_t>(0);
    }
    auto cur = act.read(sysctl_target(key));
    if (!cur || !*cur) return std::nullopt;
    auto v = parse_int(**cur);
    return v ? std::optional<int64_t>(*v) : std::nullopt;
  };
  uint64_t ram_kb = host.total() / 1024;
  if (auto mf = effective("vm.min_free_kbytes");
      sets("vm.min_free_kbytes") && mf && static_cast<uint64_t>(*mf) > ram_kb / 10)
    why.push_back("vm.min_free_kbytes = " + std::to_string(*mf) + " KiB is above 10% of RAM (" +
                  std::to_string(ram_kb / 10) + " KiB): the kernel would reclaim and OOM-kill with most memory free");
  auto ratio = effective("vm.dirty_ratio"), bytes = effective("vm.dirty_bytes");
  if ((sets("vm.dirty_ratio") || sets("vm.dirty_bytes")) && ratio && bytes && *ratio == 0 && *bytes == 0)
    why.push_back("vm.dirty_ratio 0 with vm.dirty_bytes 0 throttles every writer on the first dirty page");
  if (sets("vm.dirty_ratio") && sets("vm.dirty_bytes") && ratio && bytes && *ratio > 0 && *bytes > 0)
    why.push_back("vm.dirty_ratio and vm.dirty_bytes are one setting: set only one of them");
  auto bg = effective("vm.dirty_background_ratio");
  // Only when the profile sets both: against the host's own value the kernel halves it itself.
  if (sets("vm.dirty_ratio") && sets("vm.dirty_background_ratio") && ratio && bg && *ratio > 0 && *bg >= *ratio)
    why.push_back("vm.dirty_background_ratio (" + std::to_string(*bg) + ") >= vm.dirty_ratio (" +
                  std::to_string(*ratio) + "): background writeback would never start before writers are throttled");
  if (auto vcp = effective("vm.vfs_cache_pressure"); sets("vm.vfs_cache_pressure") && vcp && *vcp == 0)
    why.push_back("vm.vfs_cache_pressure = 0 never reclaims dentries and inodes: the host runs out of memory");
  if (auto wsf = effective("vm.watermark_scale_factor"); sets("vm.watermark_scale_factor") && wsf && *wsf > 1000)
    why.push_back("vm.watermark_scale_factor = " + std::to_string(*wsf) + " keeps more than 10% of RAM free per zone");
  if (auto oc = effective("vm.overcommit_memory"); sets("vm.overcommit_memory") && oc && *oc == 2)
    why.push_back("vm.overcommit_memory = 2 (strict) makes mmap of large model files and CUDA reservations fail");
  return why;
}

std::vector<Change> profile_changes(const ResolvedProfile& p) {
  std::vector<Change> changes;
  for (const auto& s : p.settings) changes.push_back({s.target, s.value, "profile " + p.name + " (" + s.source + ")"});
  return changes;
}

}  // namespace spark::profile
