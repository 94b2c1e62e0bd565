// spark-tune profile list | show NAME | keys
#include <iostream>

#include "cli/registry.h"
#include "profile/profile_ops.h"

using spark::tune::HostActuator;

using spark::profile::KeyType, spark::profile::ProfileStore, spark::profile::known_keys,
    spark::profile::load_profile_file, spark::profile::resolve_named_profile;

namespace spark::cli {
namespace {

struct ProfileArgs {
  std::string name;
};

int do_list(Context& ctx) {
  ProfileStore store(ctx.paths);
  nlohmann::json arr = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows;
  for (const auto& [name, file] : store.list()) {
    auto p = load_profile_file(file);
    std::string desc = p ? p->description : std::string("(invalid: ") + p.error().what() + ")";
    std::string inherit = p ? p->inherit : "";
    arr.push_back(
        {{"name", name}, {"file", file.string()}, {"inherit", inherit}, {"description", desc}, {"valid", p.ok()}});
    rows.push_back({name, inherit.empty() ? "-" : inherit, desc});
  }
  if (ctx.json)
    print_json(arr);
  else
    print_table({"PROFILE", "INHERITS", "DESCRIPTION"}, rows);
  return k_exit_ok;
}

int do_show(Context& ctx, const std::string& name) {
  HostActuator act(ctx.paths);
  auto r = resolve_named_profile(ctx.paths, name, act);
  if (!r) return report_error(ctx, r.error().what());
  if (ctx.json) {
    print_json(to_json(*r));
    return k_exit_ok;
  }
  std::string chain;
  for (const auto& c : r->chain) chain += (chain.empty() ? "" : " <- ") + c;
  std::cout << "profile " << r->name << " (" << chain << "), resolved for this host\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : r->settings) rows.push_back({s.key, s.raw, s.value, s.current, s.source});
  print_table({"KEY", "WRITTEN", "VALUE", "NOW", "FROM"}, rows);
  for (const auto& [k, v] : r->options) std::cout << k << " = " << v << "\n";
  return k_exit_ok;
}

int do_keys(Context& ctx) {
  nlohmann::json arr = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows;
  for (const auto& k : known_keys()) {
    std::string range;
    if (k.type == KeyType::choice)
      for (const auto& c : k.choices) range += (range.empty() ? "" : "|") + c;
    else
      range = std::to_string(k.min) + ".." + (k.max == INT64_MAX || k.max == INT32_MAX ? "max" : std::to_string(k.max));
    arr.push_back({{"key", k.name}, {"unit", k.unit}, {"range", range}, {"summary", k.summary}});
    rows.push_back({k.name, k.unit, range, k.summary});
  }
  if (ctx.json)
    print_json(arr);
  else
    print_table({"KEY", "UNIT", "RANGE", "WHAT IT DOES"}, rows);
  return k_exit_ok;
}

const Verb k_verb{
    "profile", 20, [](CLI::App& app, Context& ctx) {
      auto* cmd = app.add_subcommand("profile", "list, show (resolved for this host) and the known keys of profiles");
      cmd->require_subcommand(1);
      auto args = std::make_shared<ProfileArgs>();
      cmd->add_subcommand("list", "shipped and operator profiles")->callback([&ctx] { ctx.exit_code = do_list(ctx); });
      auto* show = cmd->add_subcommand("show", "a profile's values resolved for this host");
      show->add_option("name", args->name, "profile name or file")->required();
      show->callback([&ctx, args] { ctx.exit_code = do_show(ctx, args->name); });
      cmd->add_subcommand("keys", "the keys a profile may set")->callback([&ctx] { ctx.exit_code = do_keys(ctx); });
    }};

}  // namespace
}  // namespace spark::cli
