// From a profile chain to the values this host gets: units converted, "4% of ram" computed and
// clamped, ">"/"<" applied against the current value, kernel ranges checked, guardrails applied.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/meminfo.h"
#include "core/result.h"
#include "profile/profile.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

namespace spark::profile {

struct ResolvedSetting {
  std::string key;  // "vm.min_free_kbytes"
  state::Target target;
  std::string raw;      // as written
  std::string source;   // "dgx-spark.toml:9" (the profile that won)
  std::string current;  // the host's value now
  std::string value;    // what apply writes (== current when a modifier keeps it)
  std::string action;   // "set", "keep" (already there), "keep (only raise)", ...
};

struct ResolvedProfile {
  std::string name;
  std::vector<std::string> chain;  // base first
  std::vector<ResolvedSetting> settings;
  std::map<std::string, std::string> options;
};

// Resolves one setting's raw text to the kernel's value (without modifiers' current comparison).
Result<std::string> resolve_value(const SettingSpec& spec, const MemInfo& host);

Result<ResolvedProfile> resolve_profile(const std::vector<Profile>& chain, const MemInfo& host, tune::Actuator& act);

// Guardrails: values that endanger the host. Each string is one reason; empty = safe.
std::vector<std::string> guardrail_violations(const ResolvedProfile& p, const MemInfo& host, tune::Actuator& act);

// The changes apply makes (only settings whose value differs or that the profile owns).
std::vector<tune::Change> profile_changes(const ResolvedProfile& p);

}  // namespace spark::profile
