// The profile verbs' work, independent of the command line: plan, apply (a Tuner transaction
// owned by "profile"), verify against the journal or a named profile, status.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "profile/overrides.h"
#include "profile/resolve.h"
#include "tune/tuner.h"

namespace spark::profile {

inline const char* k_profile_owner = "profile";

Result<ResolvedProfile> resolve_named_profile(const HostPaths& paths, const std::string& name, tune::Actuator& act);

struct ApplyRequest {
  std::string profile;
  bool dry_run = false;
  bool persist = false;
  bool force = false;
};

struct ApplyOutcome {
  ResolvedProfile resolved;
  std::vector<std::string> guardrails;       // reasons; applied anyway only with force
  std::vector<tune::ChangeResult> results;   // empty on dry run
  std::vector<SysctlSource> boot_overrides;  // files that win over the persisted drop-in at boot
  std::vector<std::string> persisted;        // files written by --persist
};

// Refuses (EPERM, every reason listed) when a guardrail trips and force is off. Nothing changes
// on refusal, on bad input, or on dry run.
Result<ApplyOutcome> apply_profile(const HostPaths& paths, tune::Actuator& act, const ApplyRequest& req);

struct VerifyRow {
  std::string key;
  std::string expected;
  std::string actual;
  std::string status;               // "ok", "drift", "held by window:w1"
  std::vector<std::string> set_by;  // config sources that set this key (for drift)
};

struct VerifyOutcome {
  std::string profile;
  std::vector<VerifyRow> rows;
  bool drift() const;
};

// Without a name: the applied profile from the journal (ENOENT when none). With a name: that profile.
Result<VerifyOutcome> verify_profile(const HostPaths& paths, tune::Actuator& act,
                                     const std::optional<std::string>& name);

nlohmann::json to_json(const ResolvedProfile& p);
nlohmann::json to_json(const VerifyOutcome& v);

}  // namespace spark::profile

namespace spark::tune {

// Beside ChangeResult's namespace, where argument-dependent lookup finds it.
nlohmann::json to_json(const ChangeResult& c);

}  // namespace spark::tune
