// Profiles: TOML files in policies/ (shipped) and /etc/spark-tune/profiles/ (the operator's).
//
//   [profile]
//   description = "..."
//   inherit = "base"                  # child wins, key by key
//   [sysctl]
//   vm.min_free_kbytes = "4% of ram"   # absolute, size with unit, or relative to this host
//   vm.vfs_cache_pressure = 200
//   vm.dirty_ratio = "<5"              # only lower the current value
//   vm.watermark_scale_factor = { value = "0.5% of ram", min = 10, max = 500 }
//   [sysctl.extra]                      # any other vm.* / kernel.* key, on purpose
//   kernel.numa_balancing = 0
//   [thp]
//   enabled = "madvise"
//   [window] / [preflight] / [detector]  # options of the load window, preflight, stall detector
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "profile/key_registry.h"

namespace spark::profile {

struct SettingSpec {
  KeyInfo key;
  std::string raw;                 // the value as written ("4% of ram", "5G", "200", ">1G")
  std::optional<std::string> min;  // clamps for relative values
  std::optional<std::string> max;
  std::string source;  // "file.toml:12"
};

struct Profile {
  std::string name;
  std::string description;
  std::string inherit;
  fs::path file;
  std::vector<SettingSpec> settings;           // own settings, in file order
  std::map<std::string, std::string> options;  // "window.readahead" -> "128K"
};

// Option keys that [window], [preflight] and [detector] accept; another part adds its own here.
struct OptionInfo {
  const char* name;  // "window.readahead"
  const char* kind;  // "size", "duration", "number", "text"
  const char* summary;
};
const std::vector<OptionInfo>& known_options();

// The most bytes a profile file may hold (docs/cli.md, "Limits").
inline constexpr size_t k_max_profile_bytes = 1u << 20;

// A profile's text from a file: opened without blocking (a FIFO is refused, not waited on), only a
// regular file of at most k_max_profile_bytes.
Result<std::string> read_profile_text(const fs::path& file);
// What parse_profile() refuses before TOML parsing: more than k_max_profile_bytes, a non-ASCII
// byte outside strings and comments.
Result<void> check_profile_bytes(std::string_view text, const fs::path& file);

// Parses one file. Errors name the file and line ("dgx-spark.toml:7: unknown key 'vm.dirty_ration'").
Result<Profile> parse_profile(const std::string& text, const std::string& name, const fs::path& file);
Result<Profile> load_profile_file(const fs::path& file);

// Where profiles are found: the operator's directory first, then the shipped policies.
class ProfileStore {
 public:
  explicit ProfileStore(const HostPaths& paths);
  ProfileStore(std::vector<fs::path> dirs) : dirs_(std::move(dirs)) {}  // NOLINT

  // NAME, or a path when it has a '/' or ends in .toml.
  Result<fs::path> locate(const std::string& name_or_path) const;
  // Loads a profile and everything it inherits; returns the chain, base first, child last.
  Result<std::vector<Profile>> load_chain(const std::string& name_or_path) const;
  // Every profile by name (the operator's shadows a shipped one of the same name).
  std::vector<std::pair<std::string, fs::path>> list() const;
  const std::vector<fs::path>& dirs() const { return dirs_; }

 private:
  std::vector<fs::path> dirs_;
};

// The shipped policies: SPARK_TUNE_POLICY_DIR env, else the installed dir, else the source tree.
fs::path shipped_policy_dir();

}  // namespace spark::profile
