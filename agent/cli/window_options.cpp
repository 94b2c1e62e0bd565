#include "cli/window_options.h"

#include <cstdlib>

#include "core/fs.h"
#include "core/units.h"
#include "daemon/protocol.h"

using spark::state::sysctl_target, spark::state::validate_sysctl_name;

using spark::tune::CacheMode, spark::tune::Change, spark::tune::MappedPolicy, spark::tune::parse_cache_mode,
    spark::tune::parse_mapped_policy;

using spark::window::MappedBudget, spark::window::WindowSpec, spark::window::parse_mapped_budget,
    spark::window::parse_read_ahead, spark::window::spec_from_json, spark::window::spec_to_json;

namespace spark::cli {

std::vector<RunExtension>& run_extensions() {
  static std::vector<RunExtension> list;
  return list;
}

CLI::Validator pid_validator() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        char* end = nullptr;
        long n = std::strtol(v.c_str(), &end, 10);
        if (end == v.c_str() || *end != '\0' || n <= 0 || n > 4'194'304)
          return "'" + v + "' is not a process id: give the PID of a running process (1 or more; see `pgrep`)";
        return {};
      },
      "PID");
}

void add_window_options(CLI::App& app, WindowCliOptions& o, bool with_pid) {
  app.add_option("--files", o.files,
                 "model files, directories or globs (their devices are throttled, their cache evicted)")
      ->type_name("PATH...");
  app.add_option("--device", o.devices, "block device to throttle (vda, /dev/nvme0n1); default: the files' devices")
      ->type_name("DEV");
  app.add_option("--readahead", o.readahead,
                 "throttle readahead of the files' devices (or --device) to SIZE during the window (e.g. 2M); "
                 "default off: measured, a throttle slows mmap loads and evict already keeps the cache low")
      ->type_name("SIZE");
  app.add_option("--cache", o.cache, "page-cache control: evict (default with --files), drop (the recipe), off")
      ->type_name("MODE");
  app.add_option("--cache-interval", o.cache_interval, "how often evict/drop runs (default: the profile's, else 100ms)")
      ->type_name("DURATION");
  app.add_option("--mapped", o.mapped,
                 "pages of the files still mapped by a process: idle (page out a mapping untouched 1s after its "
                 "process stopped reading it, "
                 "default), cold, pageout, off")
      ->type_name("POLICY");
  app.add_option("--mapped-budget", o.mapped_budget,
                 "page cache the files may hold while mapped before idle mappings are paged out: a size (default: the "
                 "profile's, else 0 = each mapping once its process is done with it) or auto (MemAvailable - files - "
                 "10% of RAM)")
      ->type_name("SIZE|auto");
  app.add_option(
         "--read-ahead", o.read_ahead,
         "bytes of a file read ahead of a loader's reader once its mapping is followed (readahead(2), within the "
         "cache the window keeps; default 32M), or off")
      ->type_name("SIZE|off");
  app.add_option("--ttl", o.ttl, "the window ends after this long at most (default: the profile's, else 180s)")
      ->type_name("DURATION");
  if (with_pid)
    app.add_option("--pid", o.pid, "end the window when this process exits")->type_name("PID")->check(pid_validator());
  app.add_option("--until-port", o.until_port, "end the window when HOST:PORT accepts connections (the server is up)")
      ->type_name("HOST:PORT");
  app.add_option("--sysctl", o.sysctls, "sysctl overlay KEY=VALUE instead of the load-window profile")
      ->type_name("KEY=VALUE");
  app.add_flag("--no-overlay", o.no_overlay, "no sysctl overlay (readahead and cache control only)");
  app.add_option("--profile", o.profile,
                 "window profile: its sysctls are the overlay, its [window] options the defaults (default load-window)")
      ->type_name("NAME");
  app.add_option("--label", o.label, "a note shown by window list");
  add_floor_options(app, o.floor, with_pid ? "--force" : "--floor-force");
}

Result<WindowSpec> to_spec(const WindowCliOptions& o) {
  WindowSpec s;
  s.files = o.files;
  s.devices = o.devices;
  if (!o.readahead.empty()) {
    if (o.readahead == "off" || o.readahead == "0") {
      s.readahead_kb = 0;
    } else {
      auto bytes = parse_size(o.readahead);
      if (!bytes) return with_context(bytes.error(), "--readahead " + o.readahead);
      if (*bytes < 4096)
        return input_error("--readahead " + o.readahead + " is below one page (4k); use 'off' for none");
      s.readahead_kb = *bytes / 1024;
    }
  }
  if (!o.cache.empty()) {
    SPARK_TRY(CacheMode m, parse_cache_mode(o.cache));
    s.cache = m;
  }
  if (!o.cache_interval.empty()) {
    auto d = parse_duration(o.cache_interval);
    if (!d) return with_context(d.error(), "--cache-interval " + o.cache_interval);
    s.cache_interval = *d;
  }
  if (!o.mapped.empty()) {
    SPARK_TRY(MappedPolicy p, parse_mapped_policy(o.mapped));
    s.mapped = p;
  }
  if (!o.mapped_budget.empty()) {
    auto b = parse_mapped_budget(o.mapped_budget);
    if (!b) return with_context(b.error(), "--mapped-budget");
    s.mapped_budget = MappedBudget{*b};
  }
  if (!o.read_ahead.empty()) {
    auto bytes = parse_read_ahead(o.read_ahead);
    if (!bytes) return with_context(bytes.error(), "--read-ahead");
    s.read_ahead = *bytes;
  }
  if (!o.ttl.empty()) {
    auto d = parse_duration(o.ttl);
    if (!d) return with_context(d.error(), "--ttl " + o.ttl);
    s.ttl = *d;
  }
  s.pid = o.pid;
  s.until_port = o.until_port;
  if (o.no_overlay && !o.sysctls.empty()) return input_error("--no-overlay and --sysctl contradict each other");
  if (o.no_overlay) s.overlay = std::vector<Change>{};
  if (!o.sysctls.empty()) {
    std::vector<Change> overlay;
    for (const auto& kv : o.sysctls) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) return input_error("--sysctl " + kv + ": expected KEY=VALUE");
      std::string key = trim(kv.substr(0, eq));
      SPARK_TRY_VOID(validate_sysctl_name(key));
      overlay.push_back({sysctl_target(key), trim(kv.substr(eq + 1)), "load window"});
    }
    s.overlay = std::move(overlay);
  }
  s.label = o.label;
  s.profile = o.profile;
  SPARK_TRY(s.floor, floor_ask_of(o.floor));
  // The agent validates again; validate here so bad input never reaches it.
  SPARK_TRY(WindowSpec checked, spec_from_json(spec_to_json(s)));
  (void)checked;
  return s;
}

Result<nlohmann::json> agent_call(const Context& ctx, const std::string& method, const nlohmann::json& params) {
  SPARK_TRY_VOID(daemon::ensure_agent(ctx.paths, {"--state-dir", ctx.paths.state.string()}));
  return daemon::call(ctx.paths, method, params);
}

int agent_error(const Context& ctx, const Error& e) { return report_error(ctx, describe(e)); }

}  // namespace spark::cli
