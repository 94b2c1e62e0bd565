// The keys a profile may set by name: type, unit, the kernel's range, and the safe range beyond
// which a value endangers the host (refused unless --force). Other vm.* / kernel.* keys are
// allowed only in an explicit [sysctl.extra] table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "state/target.h"

namespace spark::profile {

enum class KeyType {
  integer,  // plain count or ratio
  kbytes,   // the kernel takes KiB: "5G" and "4% of ram" convert
  bytes,    // the kernel takes bytes
  choice,   // one of `choices`
  text,     // [sysctl.extra]: written as given (integers printed)
};

struct KeyInfo {
  std::string name;      // as written in a profile: "vm.min_free_kbytes", "thp.enabled"
  state::Target target;  // where it lives
  KeyType type = KeyType::integer;
  int64_t min = 0;  // kernel's accepted range (integer types)
  int64_t max = INT64_MAX;
  std::vector<std::string> choices;
  std::string unit;     // for people: "KiB", "%", "centiseconds"
  std::string summary;  // one line for `profile show` and docs
};

const std::vector<KeyInfo>& known_keys();
const KeyInfo* find_key(const std::string& name);
// The profile name of a target ("thp.defrag" for the sysfs file), else its display form.
std::string key_name_for(const state::Target& t);
// A key for [sysctl.extra]: vm.* or kernel.*, a valid name, integer or text value.
Result<KeyInfo> extra_key(const std::string& name);

}  // namespace spark::profile
