#include "profile/profile_options.h"

#include "profile/profile.h"
#include "profile/profile_ops.h"
#include "state/journal.h"

using spark::state::JournalData, spark::state::read_journal;

namespace spark::profile {

std::optional<std::string> ProfileOptions::get(const std::string& key) const {
  auto it = options.find(key);
  if (it == options.end()) return std::nullopt;
  return it->second;
}

std::string ProfileOptions::describe() const {
  if (profile.empty()) return "built-in defaults";
  return "profile '" + profile + "'" + (applied ? " (applied)" : "");
}

namespace {

Result<std::map<std::string, std::string>> chain_options(const HostPaths& paths, const std::string& name) {
  SPARK_TRY(auto chain, ProfileStore(paths).load_chain(name));
  std::map<std::string, std::string> out;
  for (const auto& p : chain)  // base first: the child's value wins
    for (const auto& [k, v] : p.options) out[k] = v;
  return out;
}

}  // namespace

Result<ProfileOptions> profile_options(const HostPaths& paths, const std::optional<std::string>& name) {
  ProfileOptions out;
  if (name) {
    SPARK_TRY(out.options, chain_options(paths, *name));
    out.profile = *name;
    return out;
  }
  SPARK_TRY(JournalData journal, read_journal(paths));
  if (!journal.owners.contains(k_profile_owner)) return out;
  const auto& state = journal.owners[k_profile_owner];
  out.profile = state.value("name", std::string("?"));
  out.applied = true;
  if (state.contains("options") && state["options"].is_object()) {
    for (const auto& [k, v] : state["options"].items())
      if (v.is_string()) out.options[k] = v.get<std::string>();
    return out;
  }
  auto reloaded = chain_options(paths, out.profile);
  if (!reloaded)
    return with_context(reloaded.error(), "reading the options of the applied profile '" + out.profile + "'");
  out.options = std::move(*reloaded);
  return out;
}

}  // namespace spark::profile
