// sysctl and persist: the reserve against the recommendation for this RAM size, who else sets the keys
// (a later sysctl.d file, tuned), drift from the active profile, and what a reboot would undo.
#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "core/fs.h"
#include "core/meminfo.h"
#include "core/units.h"
#include "daemon/protect.h"
#include "doctor/doctor.h"
#include "profile/overrides.h"
#include "state/journal.h"
#include "telemetry/host_fit.h"
#include "tune/actuator.h"

using spark::state::JournalData, spark::state::read_journal, spark::state::sysctl_target;

using spark::tune::HostActuator, spark::tune::normalize_value;

using spark::profile::SysctlSource, spark::profile::VerifyOutcome, spark::profile::k_persist_file_name,
    spark::profile::k_profile_owner, spark::profile::sysctl_sources, spark::profile::verify_profile;

namespace spark::doctor {

namespace {

// Keys spark-tune's profiles manage; doctor names who else sets them.
const std::vector<std::string> k_watched_keys = {
    "vm.min_free_kbytes",  "vm.vfs_cache_pressure",     "vm.dirty_ratio", "vm.dirty_background_ratio",
    "vm.dirty_bytes",      "vm.dirty_background_bytes", "vm.swappiness",  "vm.watermark_scale_factor",
    "vm.overcommit_memory"};

std::vector<std::string> watched_keys(const Env& env) {
  std::vector<std::string> keys = k_watched_keys;
  if (env.active_profile)
    for (const auto& row : env.active_profile->rows)
      if (std::find(keys.begin(), keys.end(), row.key) == keys.end()) keys.push_back(row.key);
  return keys;
}

// The running value of a sysctl, as the actuator reads (and normalises) it.
Result<std::string> sysctl_value(const HostPaths& paths, const std::string& key) {
  HostActuator act(paths);
  SPARK_TRY(auto v, act.read(sysctl_target(key)));
  return v.value_or("");
}

std::string persist_path(const Env& env) { return (env.paths.sysctl_d / k_persist_file_name).string(); }

// The value each key gets at boot: the last sysctl.d / sysctl.conf assignment (tuned excluded: it may not run).
std::map<std::string, SysctlSource> boot_values(const std::vector<SysctlSource>& all) {
  std::map<std::string, SysctlSource> out;
  for (const auto& a : all)
    if (!a.file_name.empty()) out[a.key] = a;
  return out;
}

}  // namespace

Result<std::optional<ActiveProfile>> read_active_profile(const HostPaths& paths) {
  SPARK_TRY(JournalData journal, read_journal(paths));
  if (!journal.owners.contains(k_profile_owner)) return std::optional<ActiveProfile>();
  HostActuator act(paths);
  SPARK_TRY(VerifyOutcome v, verify_profile(paths, act, std::nullopt));
  return std::optional<ActiveProfile>(ActiveProfile{v.profile, std::move(v.rows)});
}

std::vector<Finding> check_sysctl(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"sysctl", s, std::move(m), std::move(fix)});
  };
  const auto keys = watched_keys(env);
  const auto sources = sysctl_sources(env.paths, keys);

  // The applied profile (from the journal): every key it set must still hold, unless a load window
  // holds it for now.
  if (!env.journal_error.empty())
    add(Status::warn, "cannot compare the applied profile: " + env.journal_error,
        "spark-tune status (a journal that cannot be read is kept for inspection)");
  bool profile_matches = false;
  if (env.active_profile) {
    const auto& ap = *env.active_profile;
    size_t drift = 0, held = 0;
    for (const auto& row : ap.rows) {
      if (row.status == "ok") continue;
      if (row.status != "drift") {
        ++held;
        add(Status::ok, row.key + " = " + row.actual + " is " + row.status + "; the profile's " + row.expected +
                            " comes back when it ends");
        continue;
      }
      ++drift;
      std::string who;
      for (const auto& s : row.set_by) who += "; " + s;
      add(Status::fail, row.key + " is " + row.actual + ", profile '" + ap.name + "' wants " + row.expected + who,
          row.set_by.empty() ? "spark-tune apply " + ap.name
                             : "remove " + row.key + " from the file named above, then spark-tune apply " + ap.name);
    }
    profile_matches = drift == 0;
    if (profile_matches)
      add(Status::ok, "applied profile '" + ap.name + "' matches the running kernel (" +
                          std::to_string(ap.rows.size() - held) + " key(s))");
  }

  // The reserve: vm.min_free_kbytes against the recommendation for this much RAM.
  auto mem = read_meminfo(env.paths);
  auto reserve = sysctl_value(env.paths, "vm.min_free_kbytes");
  if (!mem || !reserve) {
    add(Status::warn, std::string("cannot read the reserve: ") + (!mem ? mem.error().what() : reserve.error().what()));
  } else {
    uint64_t have = std::strtoull(reserve->c_str(), nullptr, 10);
    uint64_t want = recommended_min_free_kbytes(mem->total());
    std::string ram = format_size(mem->total());
    std::string fix =
        "echo " + std::to_string(want) +
        " > /proc/sys/vm/min_free_kbytes; to keep it: echo 'vm.min_free_kbytes = " + std::to_string(want) + "' > " +
        persist_path(env) + " (or spark-tune apply PROFILE --persist)";
    if (have < want) {
      add(profile_matches ? Status::warn : Status::fail,
          "vm.min_free_kbytes is " + *reserve + " (" + format_size(have * 1024) + "); for " + ram +
              " of RAM keep at least " + std::to_string(want) + " (" + format_size(want * 1024) +
              ") free so pinned and driver allocations find pages during a load",
          fix);
    } else if (have * 1024 > mem->total() / 20) {
      add(Status::warn,
          "vm.min_free_kbytes is " + *reserve + " (" + format_size(have * 1024) + "), over 5% of " + ram +
              ": reclaim starts early and the page cache stays small",
          "echo " + std::to_string(want) + " > /proc/sys/vm/min_free_kbytes");
    } else {
      add(Status::ok, "vm.min_free_kbytes " + *reserve + " (" + format_size(have * 1024) + ") meets the " +
                          format_size(want * 1024) + " recommended for " + ram);
    }
  }
  if (auto oc = sysctl_value(env.paths, "vm.overcommit_memory"); oc && *oc == "2")
    add(Status::warn,
        "vm.overcommit_memory is 2 (strict): mapping a large model or a CUDA context can fail with ENOMEM",
        "echo 0 > /proc/sys/vm/overcommit_memory");

  // Who overrides what: tuned re-applies its profile; of several sysctl.d files the last one wins at boot.
  std::map<std::string, std::vector<SysctlSource>> by_key;
  for (const auto& s : sources) {
    if (s.file_name.empty()) {
      add(Status::warn,
          s.key + " = " + s.value + " is set by " + s.source + ", which re-applies it whenever tuned starts",
          "remove " + s.key + " from the [sysctl] section of that tuned.conf, or switch tuned off (tuned-adm off)");
      continue;
    }
    by_key[s.key].push_back(s);
  }
  for (const auto& [key, list] : by_key) {
    const auto& winner = list.back();
    for (size_t i = 0; i + 1 < list.size(); ++i) {
      if (normalize_ws(list[i].value) == normalize_ws(winner.value)) continue;
      std::string file = list[i].source.substr(0, list[i].source.rfind(':'));
      add(Status::warn,
          key + ": " + winner.source + " (" + winner.value + ") overrides " + list[i].source + " (" + list[i].value +
              ") at boot",
          list[i].file_name == k_persist_file_name
              ? "remove " + key + " from " + winner.source.substr(0, winner.source.rfind(':'))
              : "keep " + key + " in one file; remove it from " + file);
    }
  }
  return out;
}

std::vector<Finding> check_persist(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"persist", s, std::move(m), std::move(fix)});
  };
  const auto keys = watched_keys(env);
  auto boot = boot_values(sysctl_sources(env.paths, keys));
  size_t drifted = 0;
  for (const auto& k : keys) {
    auto now = sysctl_value(env.paths, k);
    if (!now) continue;
    auto it = boot.find(k);
    if (it != boot.end() && normalize_ws(it->second.value) != *now) {
      ++drifted;
      add(Status::warn,
          k + " is " + *now + " now but " + it->second.source + " sets " + it->second.value +
              " at boot: the running value is lost at reboot (fine during a load window)",
          "to keep it: echo '" + k + " = " + *now + "' > " + persist_path(env) +
              " (or spark-tune apply PROFILE --persist)");
    }
  }
  // The reserve that doctor's sysctl check asks for must survive a reboot too.
  auto mem = read_meminfo(env.paths);
  auto reserve = sysctl_value(env.paths, "vm.min_free_kbytes");
  if (mem && reserve && !boot.count("vm.min_free_kbytes") &&
      std::strtoull(reserve->c_str(), nullptr, 10) >= recommended_min_free_kbytes(mem->total()) &&
      std::strtoull(reserve->c_str(), nullptr, 10) > 0) {
    ++drifted;
    add(Status::warn,
        "vm.min_free_kbytes " + *reserve + " is set only at run time: no sysctl.d file keeps it after a reboot",
        "echo 'vm.min_free_kbytes = " + *reserve + "' > " + persist_path(env));
  }
  size_t dropins = 0;
  std::error_code ec;
  for (fs::directory_iterator it(env.paths.systemd_d, ec), end; !ec && it != end; it.increment(ec))
    if (fs::exists(it->path() / k_protect_dropin)) ++dropins;
  if (drifted == 0)
    add(Status::ok, "running sysctls match what boot sets" +
                        (dropins ? "; " + std::to_string(dropins) + " protection drop-in(s) persist in " +
                                       env.paths.systemd_d.string()
                                 : std::string()));
  return out;
}

std::vector<Finding> check_swap(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"swap", s, std::move(m), std::move(fix)});
  };
  auto swaps = read_file(env.paths.proc / "swaps");
  auto meminfo = read_meminfo(env.paths);
  if (!swaps || !meminfo) {
    add(Status::warn, std::string("cannot read ") + (!swaps ? swaps.error().what() : meminfo.error().what()));
    return out;
  }
  uint64_t disk_kb = 0, zram_kb = 0;
  auto lines = split_lines(*swaps);
  for (size_t i = 1; i < lines.size(); ++i) {
    std::istringstream in(lines[i]);
    std::string name, type;
    uint64_t size = 0;
    if (!(in >> name >> type >> size)) continue;
    (name.find("/zram") != std::string::npos ? zram_kb : disk_kb) += size;
  }
  uint64_t total = meminfo->total(), pinned = meminfo->unevictable();
  if (disk_kb + zram_kb == 0)
    add(Status::warn,
        "no swap or zram: under pressure only page cache can be reclaimed, so a load evicts every other process's "
        "cache and then the OOM killer runs",
        "zram: apt-get install systemd-zram-generator && printf '[zram0]\\nzram-size = ram / 4\\n' > "
        "/etc/systemd/zram-generator.conf && systemctl daemon-reload && systemctl start systemd-zram-setup@zram0");
  else
    add(Status::ok, "swap " + format_size(disk_kb * 1024) + ", zram " + format_size(zram_kb * 1024));
  if (total && pinned > total / 4)
    add(Status::warn,
        format_size(pinned) + " of " + format_size(total) +
            " is pinned (Unevictable): swap cannot relieve it; pinned host buffers of model servers "
            "(GGML_CUDA_NO_PINNED unset) are the usual holders",
        "see `spark-tune doctor gpu` for servers with pinned memory");
  return out;
}

std::vector<Finding> check_thp(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"thp", s, std::move(m), std::move(fix)});
  };
  auto base = env.paths.sys / "kernel/mm/transparent_hugepage";
  auto enabled = read_value(base / "enabled");
  auto defrag = read_value(base / "defrag");
  if (!enabled) {
    add(Status::warn, "no transparent hugepage support: huge-page-backed loads use 4 KiB pages");
    return out;
  }
  // The kernel marks the mode in use: "always [madvise] never" -> "madvise".
  std::string e = normalize_value(*enabled), d = defrag ? normalize_value(*defrag) : "";
  if (d == "always")
    add(Status::warn,
        "THP enabled=" + e +
            " defrag=always: page faults compact memory synchronously and stall loads on a fragmented host",
        "echo defer+madvise > " + (base / "defrag").string());
  else
    add(Status::ok, "THP enabled=" + e + " defrag=" + d +
                        (e == "never" ? " (huge-page-backed loads fall back to 4 KiB pages)" : ""));
  return out;
}

}  // namespace spark::doctor
