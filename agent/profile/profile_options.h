// The [window] / [preflight] / [detector] options of a profile (profile.h known_options), for the
// verbs whose defaults come from a profile: the profile named on the command line, else the one
// applied (the options the journal recorded at apply time), else none (built-in defaults).
#pragma once

#include <map>
#include <optional>
#include <string>

#include "core/host_paths.h"
#include "core/result.h"

namespace spark::profile {

struct ProfileOptions {
  std::string profile;                         // empty: none named and none applied
  bool applied = false;                        // true: the applied profile, from the journal
  std::map<std::string, std::string> options;  // "preflight.factor" -> "0.9", child wins over what it inherits

  std::optional<std::string> get(const std::string& key) const;
  // "profile 'dgx-spark' (applied)", "profile 'x'", "built-in defaults"
  std::string describe() const;
};

// name: a profile name or file (as `apply` takes it). Errors: a named profile that does not load, an
// unreadable journal. An applied profile without recorded options (a journal from an earlier
// version) is reloaded by name.
Result<ProfileOptions> profile_options(const HostPaths& paths, const std::optional<std::string>& name);

}  // namespace spark::profile
