// The window spec codec: what a window is asked (WindowSpec) and what the journal keeps of a begun
// one (WindowRecord), to and from JSON; the window profile that fills what was not asked; the
// --files and --mapped-budget a window is given. No state of a WindowManager (window.cpp).
#include <sys/stat.h>

#include <algorithm>

#include "core/fs.h"
#include "core/meminfo.h"
#include "core/port.h"
#include "core/units.h"
#include "profile/profile_ops.h"
#include "profile/resolve.h"
#include "window/window.h"

using spark::state::sysctl_target, spark::state::validate_sysctl_name;

using spark::tune::Actuator, spark::tune::CacheKeeperOptions, spark::tune::CacheMode, spark::tune::Change,
    spark::tune::MappedPolicy, spark::tune::cache_mode_name, spark::tune::expand_files, spark::tune::mapped_policy_name,
    spark::tune::parse_cache_mode, spark::tune::parse_mapped_policy;

using spark::profile::profile_changes, spark::profile::resolve_named_profile;

namespace spark::window {

using json = nlohmann::json;

Result<WindowProfile> load_window_profile(const HostPaths& paths, Actuator& act, const std::string& name) {
  auto resolved = resolve_named_profile(paths, name, act);
  if (!resolved) return with_context(resolved.error(), "window profile " + name);
  WindowProfile wp;
  wp.name = resolved->name;
  wp.overlay = profile_changes(*resolved);
  wp.options = resolved->options;
  return wp;
}

Result<std::vector<Change>> load_window_overlay(const HostPaths& paths, Actuator& act) {
  SPARK_TRY(WindowProfile wp, load_window_profile(paths, act));
  return wp.overlay;
}

json spec_to_json(const WindowSpec& s) {
  json j;
  j["files"] = s.files;
  j["devices"] = s.devices;
  if (s.readahead_kb) j["readahead_kb"] = *s.readahead_kb;
  if (s.cache) j["cache"] = cache_mode_name(*s.cache);
  if (s.cache_interval) j["cache_interval_ms"] = s.cache_interval->count();
  j["mapped"] = mapped_policy_name(s.mapped);
  if (s.mapped_budget) j["mapped_budget"] = s.mapped_budget->bytes ? json(*s.mapped_budget->bytes) : json("auto");
  if (s.read_ahead) j["read_ahead"] = *s.read_ahead;
  if (s.ttl) j["ttl_ms"] = s.ttl->count();
  if (!s.profile.empty()) j["profile"] = s.profile;
  if (s.pid) j["pid"] = s.pid;
  if (!s.until_port.empty()) j["until_port"] = s.until_port;
  if (s.overlay) {
    json o = json::array();
    for (const auto& c : *s.overlay) o.push_back({{"key", c.target.name}, {"value", c.value.value_or("")}});
    j["overlay"] = o;
  }
  if (!s.label.empty()) j["label"] = s.label;
  if (s.floor) j["floor"] = floor_ask_to_json(*s.floor);
  return j;
}

Result<WindowSpec> spec_from_json(const json& j) {
  if (!j.is_object()) return input_error("window parameters must be a JSON object");
  WindowSpec s;
  try {
    if (j.contains("files")) s.files = j.at("files").get<std::vector<std::string>>();
    if (j.contains("devices")) s.devices = j.at("devices").get<std::vector<std::string>>();
    if (j.contains("readahead_kb")) s.readahead_kb = j.at("readahead_kb").get<uint64_t>();
    if (j.contains("cache")) {
      SPARK_TRY(CacheMode m, parse_cache_mode(j.at("cache").get<std::string>()));
      s.cache = m;
    }
    if (j.contains("cache_interval_ms"))
      s.cache_interval = std::chrono::milliseconds(j.at("cache_interval_ms").get<int64_t>());
    if (j.contains("mapped")) {
      SPARK_TRY(MappedPolicy p, parse_mapped_policy(j.at("mapped").get<std::string>()));
      s.mapped = p;
    }
    if (j.contains("mapped_budget")) {
      if (j.at("mapped_budget").is_string()) {
        SPARK_TRY(std::optional<uint64_t> b, parse_mapped_budget(j.at("mapped_budget").get<std::string>()));
        s.mapped_budget = MappedBudget{b};
      } else {
        s.mapped_budget = MappedBudget{j.at("mapped_budget").get<uint64_t>()};
      }
    }
    if (j.contains("read_ahead")) s.read_ahead = j.at("read_ahead").get<uint64_t>();
    if (j.contains("ttl_ms")) s.ttl = std::chrono::milliseconds(j.at("ttl_ms").get<int64_t>());
    if (j.contains("pid")) s.pid = j.at("pid").get<pid_t>();
    if (j.contains("until_port")) s.until_port = j.at("until_port").get<std::string>();
    if (j.contains("overlay")) {
      std::vector<Change> o;
      for (const auto& c : j.at("overlay")) {
        std::string key = c.at("key").get<std::string>();
        SPARK_TRY_VOID(validate_sysctl_name(key));
        o.push_back({sysctl_target(key), c.at("value").get<std::string>(), "load window"});
      }
      s.overlay = std::move(o);
    }
    if (j.contains("label")) s.label = j.at("label").get<std::string>();
    if (j.contains("profile")) s.profile = j.at("profile").get<std::string>();
    if (j.contains("floor")) {
      SPARK_TRY(FloorAsk a, floor_ask_from_json(j.at("floor")));
      s.floor = std::move(a);
    }
  } catch (const json::exception& e) {
    return input_error(std::string("bad window parameters: ") + e.what());
  }
  if (s.ttl && s.ttl->count() <= 0) return input_error("TTL must be more than 0 (e.g. --ttl 180s)");
  if (s.ttl && *s.ttl > k_max_window_ttl) {
    auto plain = [](std::chrono::milliseconds d) {
      auto ms = d.count();
      if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + " h";
      if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + " min";
      return format_duration(d);
    };
    return input_error("a TTL of " + plain(*s.ttl) + " is over the limit: a window lasts at most " +
                       plain(k_max_window_ttl) + " (end it earlier with `spark-tune window end`, or begin a new one)");
  }
  if (s.cache_interval && (s.cache_interval->count() < 10 || s.cache_interval->count() > 60'000))
    return input_error("cache interval must be between 10ms and 60s");
  if (s.profile.find('/') != std::string::npos) return input_error("window profile is a name, not a path");
  if (s.pid < 0) return input_error("pid must be positive");
  if (!s.until_port.empty()) SPARK_TRY_VOID(parse_port_address(s.until_port));
  if (s.readahead_kb && *s.readahead_kb > 1024 * 1024) return input_error("readahead above 1 GiB is not a throttle");
  if (s.read_ahead && *s.read_ahead > (1ULL << 30))
    return input_error("read-ahead above 1 GiB is not within a cache budget: give up to 1G, or off");
  return s;
}

json record_to_json(const WindowRecord& r) {
  json j = {{"id", r.id},
            {"dirs", r.dirs},
            {"devices", r.devices},
            {"readahead_kb", r.readahead_kb},
            {"cache", cache_mode_name(r.cache)},
            {"cache_interval_ms", r.cache_interval_ms},
            {"mapped", mapped_policy_name(r.mapped)},
            {"mapped_budget", r.mapped_budget},
            {"read_ahead", r.read_ahead},
            {"deadline_ms", r.deadline_ms},
            {"begun_ms", r.begun_ms},
            {"pid", r.pid},
            {"pid_start", r.pid_start},
            {"until_port", r.until_port},
            {"label", r.label},
            {"floor", r.floor}};
  size_t count = std::max(r.file_count, r.files.size());
  if (!r.given.empty()) j["given"] = r.given;
  if (r.files.size() <= k_journal_inline_files || r.given.empty()) j["files"] = r.files;
  j["file_count"] = count;
  return j;
}

json record_view_json(const WindowRecord& r) {
  WindowRecord v;  // all but the files (a big window's list is not copied for each reply)
  v.id = r.id;
  v.given = r.given;
  v.dirs = r.dirs;
  v.devices = r.devices;
  v.readahead_kb = r.readahead_kb;
  v.cache = r.cache;
  v.cache_interval_ms = r.cache_interval_ms;
  v.mapped = r.mapped;
  v.mapped_budget = r.mapped_budget;
  v.read_ahead = r.read_ahead;
  v.deadline_ms = r.deadline_ms;
  v.begun_ms = r.begun_ms;
  v.pid = r.pid;
  v.pid_start = r.pid_start;
  v.until_port = r.until_port;
  v.label = r.label;
  v.floor = r.floor;
  v.file_count = std::max(r.file_count, r.files.size());
  v.files.assign(r.files.begin(),
                 r.files.begin() + static_cast<std::ptrdiff_t>(std::min(r.files.size(), k_listed_files)));
  json j = record_to_json(v);
  j["files"] = v.files;  // the first k_listed_files, whatever the journal keeps
  return j;
}

Result<void> expand_record_files(WindowRecord& r) {
  if (!r.files.empty() || r.given.empty()) return {};
  SPARK_TRY(std::vector<fs::path> files, expand_files(r.given));
  for (const auto& f : files) r.files.push_back(f.string());
  return {};
}

Result<WindowRecord> record_from_json(const json& j) {
  WindowRecord r;
  try {
    r.id = j.at("id").get<std::string>();
    r.files = j.value("files", std::vector<std::string>{});
    r.given = j.value("given", std::vector<std::string>{});
    r.file_count = j.value("file_count", r.files.size());
    r.dirs = j.value("dirs", std::vector<std::string>{});
    r.devices = j.value("devices", std::vector<std::string>{});
    r.readahead_kb = j.value("readahead_kb", uint64_t{0});
    SPARK_TRY(CacheMode m, parse_cache_mode(j.value("cache", std::string("off"))));
    r.cache = m;
    r.cache_interval_ms = j.value("cache_interval_ms", int64_t{100});
    SPARK_TRY(MappedPolicy p, parse_mapped_policy(j.value("mapped", std::string("idle"))));
    r.mapped = p;
    r.mapped_budget = j.value("mapped_budget", uint64_t{0});
    r.read_ahead = j.value("read_ahead", CacheKeeperOptions{}.read_ahead);
    r.deadline_ms = j.at("deadline_ms").get<int64_t>();
    r.begun_ms = j.value("begun_ms", int64_t{0});
    r.pid = j.value("pid", pid_t{0});
    r.pid_start = j.value("pid_start", uint64_t{0});
    r.until_port = j.value("until_port", std::string());
    r.label = j.value("label", std::string());
    if (j.contains("floor") && !j.at("floor").is_null()) {
      SPARK_TRY_VOID(floor_from_json(j.at("floor")));
      r.floor = j.at("floor");
    }
  } catch (const json::exception& e) {
    return sys_error(EINVAL, std::string("window record in the journal is damaged: ") + e.what());
  }
  return r;
}

Result<uint64_t> auto_mapped_budget(const HostPaths& paths, uint64_t files_bytes) {
  SPARK_TRY(MemInfo mi, read_meminfo(paths));
  uint64_t reserve = mi.total() / 10;
  uint64_t need = files_bytes + reserve;
  return mi.available() > need ? mi.available() - need : 0;
}

Result<std::optional<uint64_t>> parse_mapped_budget(const std::string& s) {
  if (s == "auto") return std::optional<uint64_t>();
  auto b = parse_size(s);
  if (!b) return input_error("mapped budget '" + s + "': give auto or a size (0 pages out idle mappings at once, 8G)");
  return std::optional<uint64_t>(*b);
}

Result<uint64_t> parse_read_ahead(const std::string& s) {
  if (s == "off") return uint64_t{0};
  auto b = parse_size(s);
  if (!b) return input_error("read-ahead '" + s + "': give a size (32M) or off");
  return *b;
}

Result<std::vector<fs::path>> expand_window_files(const std::vector<std::string>& given) {
  for (const auto& f : given) SPARK_TRY_VOID(refuse_pseudo_filesystem(f, "--files"));
  SPARK_TRY(auto files, expand_files(given));
  if (files.empty()) return input_error("the given paths hold no regular file");
  return files;
}

bool plain_window_files(const std::vector<std::string>& given) {
  for (const auto& f : given) {
    if (f.find_first_of("*?[{") != std::string::npos) return false;
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  }
  return true;
}

}  // namespace spark::window
