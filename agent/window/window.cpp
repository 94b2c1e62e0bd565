// The windows' runtime: WindowManager (begin, end, recovery, the keepers' ticks). The spec codec and
// the window profile are spec.cpp.
#include "window/window.h"

#include <signal.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/fd.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/meminfo.h"
#include "core/port.h"
#include "core/proc_stat.h"
#include "core/units.h"
#include "gpu/unified.h"
#include "profile/profile_ops.h"
#include "profile/resolve.h"
#include "telemetry/reserve.h"
#include "tune/readahead.h"

using spark::state::JournalData, spark::state::ensure_state_dir, spark::state::read_journal;

using spark::tune::ApplyOptions, spark::tune::CacheKeeper, spark::tune::CacheKeeperOptions,
    spark::tune::CacheKeeperStats, spark::tune::CacheMode, spark::tune::Change, spark::tune::FileIdSet,
    spark::tune::HostPageCounts, spark::tune::KeeperHost, spark::tune::LazyPageCounts, spark::tune::ProcessMappings,
    spark::tune::Tuner, spark::tune::cache_mode_name, spark::tune::evict_file, spark::tune::parse_cache_mode,
    spark::tune::read_readahead_kb, spark::tune::readahead_change, spark::tune::readahead_device_by_name,
    spark::tune::readahead_device_of_file, spark::tune::scan_file_mappings;

using spark::telemetry::overlay_reserve;

using spark::gpu::unified_memory_host;

namespace spark::window {

using json = nlohmann::json;

namespace {

int64_t now_real_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string owner_of(const std::string& id) { return "window:" + id; }

Fd open_pidfd(pid_t pid) { return Fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))); }

}  // namespace

struct WindowManager::Runtime {
  WindowRecord record;
  Fd pidfd;
  Clock::time_point deadline;
  std::unique_ptr<CacheKeeper> cache;
  bool keeper_waits = false;           // begun with keeper_later: built elsewhere (attach_keeper)
  std::unique_ptr<FloorKeeper> floor;  // window/floor.h: only with a floor
  Clock::time_point next_cache{};
  Clock::time_point next_port{};
  // An end that failed: retried with the backoff doubling (issue 13 defect 1).
  EndRetry end_retry;
  json reserve;  // what the overlay takes from MemAvailable (telemetry/reserve.h), measured at begin
  std::unique_ptr<PortProbe> port_probe;  // --until-port: never blocks the loop
};

// The tick's shared view for every keeper due in it (see KeeperHost): one read of vmstat, one scan
// of the processes' mappings for the files of every window.
class WindowManager::TickHost : public KeeperHost {
 public:
  TickHost(const HostPaths& paths, const std::map<std::string, std::unique_ptr<Runtime>>& windows)
      : paths_(paths), windows_(windows), counts_(paths) {}
  const HostPageCounts* counts() override { return counts_.get(); }
  std::optional<Clock::time_point> deadline() const override { return deadline_; }
  void set_deadline(std::optional<Clock::time_point> d) { deadline_ = d; }
  const ProcessMappings& mappings() override {
    if (!scan_) {
      FileIdSet ids;
      for (const auto& [id, rt] : windows_)
        if (rt->cache) ids.insert(rt->cache->ids().begin(), rt->cache->ids().end());
      scan_ = scan_file_mappings(paths_, ids);
    }
    return *scan_;
  }

 private:
  const HostPaths& paths_;
  const std::map<std::string, std::unique_ptr<Runtime>>& windows_;
  LazyPageCounts counts_;
  std::optional<ProcessMappings> scan_;
  std::optional<Clock::time_point> deadline_;
};

WindowManager::WindowManager(HostPaths paths, Tuner& tuner) : paths_(std::move(paths)), tuner_(tuner) {}
WindowManager::~WindowManager() = default;

WindowManager::Clock::time_point WindowManager::aligned_tick(Clock::time_point now,
                                                             std::chrono::milliseconds interval) const {
  auto iv = std::max<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(interval).count(), 1);
  auto since = std::chrono::duration_cast<std::chrono::nanoseconds>(now - epoch_).count();
  return epoch_ + std::chrono::nanoseconds((since / iv + 1) * iv);
}

Result<std::string> WindowManager::next_id() {
  SPARK_TRY_VOID(ensure_state_dir(paths_));
  fs::path seq_file = paths_.state / "window_seq";
  uint64_t seq = 0;
  if (auto v = read_value(seq_file); v) {
    try {
      seq = std::stoull(*v);
    } catch (...) {
      seq = 0;
    }
  }
  seq = std::max(seq, last_seq_);  // a file lost (power loss: it is renamed, not fsync'd) never goes back
  do ++seq;
  while (windows_.count("w" + std::to_string(seq)));
  // Written in place, padded to one size, without fsync (like a boot-scoped journal, see
  // JournalTxn::commit): a rename over it would free the old file's blocks, and on a file system
  // mounted with discard that waits for the device (bench/agent_soak). The ids only need to differ
  // from those the journal still holds (a torn write reads as 0: last_seq_ and windows_ decide),
  // and a power loss ends every window of this boot.
  {
    int fd = ::open(seq_file.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return errno_error("opening " + seq_file.string());
    char buf[32];
    int n = std::snprintf(buf, sizeof buf, "%-20llu\n", static_cast<unsigned long long>(seq));
    ssize_t w = ::pwrite(fd, buf, static_cast<size_t>(n), 0);
    int e = errno;
    ::close(fd);
    if (w != n)
      return w < 0 ? sys_error(e, "writing " + seq_file.string())
                   : sys_error(EIO, "short write to " + seq_file.string());
  }
  last_seq_ = seq;
  return "w" + std::to_string(seq);
}

std::unique_ptr<CacheKeeper> KeeperRecipe::build() const {
  std::vector<fs::path> list(files.begin(), files.end());
  if (list.empty() && !given.empty()) {
    if (auto x = spark::tune::expand_files(given); x)
      list = std::move(*x);
    else
      log_warning("window " + id + ": its files not found again: " + describe(x.error()) +
                  " (its directories are still followed)");
  }
  auto keeper = std::make_unique<CacheKeeper>(paths, *act, owner_of(id), std::move(list), options, fds);
  keeper->follow_directories(std::vector<fs::path>(dirs.begin(), dirs.end()));
  return keeper;
}

Result<WindowRecord> WindowManager::begin(const WindowSpec& asked, const std::vector<fs::path>* expanded,
                                          bool keeper_later) {
  // 1. Validate everything before any change; the profile fills what was not asked for.
  if (windows_.size() >= k_max_windows)
    return sys_error(EBUSY, std::to_string(windows_.size()) +
                                " windows are open, the limit: end one first "
                                "(spark-tune window list, window end ID)");
  WindowSpec spec = asked;
  std::string profile_name = spec.profile.empty() ? k_window_profile : spec.profile;
  auto profile = load_window_profile(paths_, tuner_.actuator(), profile_name);
  if (!profile && (!spec.overlay || !spec.profile.empty())) return profile.error();
  if (profile) {
    if (!spec.overlay) spec.overlay = profile->overlay;
    auto opt = [&](const char* k) -> std::optional<std::string> {
      auto it = profile->options.find(k);
      return it == profile->options.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
    auto duration_opt = [&](const char* k) -> Result<std::optional<std::chrono::milliseconds>> {
      auto v = opt(k);
      if (!v) return std::optional<std::chrono::milliseconds>();
      auto d = parse_duration(*v);
      if (!d) return with_context(d.error(), "profile " + profile_name + " " + k);
      return std::optional<std::chrono::milliseconds>(*d);
    };
    if (!spec.ttl) {
      SPARK_TRY(spec.ttl, duration_opt("window.ttl"));
    }
    // drop is the recipe: every 100 ms unless asked otherwise; the profile's interval is evict's.
    if (!spec.cache_interval && spec.cache != CacheMode::drop) {
      SPARK_TRY(spec.cache_interval, duration_opt("window.cache_interval"));
    }
    if (!spec.readahead_kb)
      if (auto v = opt("window.readahead")) {
        SPARK_TRY(uint64_t bytes, parse_size(*v));
        spec.readahead_kb = bytes / 1024;
      }
    if (!spec.mapped_budget)
      if (auto v = opt("window.mapped_budget")) {
        auto b = parse_mapped_budget(*v);
        if (!b) return with_context(b.error(), "profile " + profile_name + " window.mapped_budget");
        spec.mapped_budget = MappedBudget{*b};
      }
    if (!spec.read_ahead)
      if (auto v = opt("window.read_ahead")) {
        auto b = parse_read_ahead(*v);
        if (!b) return with_context(b.error(), "profile " + profile_name + " window.read_ahead");
        spec.read_ahead = *b;
      }
    if (!spec.cache && !spec.files.empty())
      if (auto v = opt("window.cache")) {
        SPARK_TRY(CacheMode m, parse_cache_mode(*v));
        spec.cache = m;
      }
  }
  if (!spec.ttl) spec.ttl = k_default_window_ttl;
  if (!spec.cache_interval) spec.cache_interval = k_default_cache_interval;
  SPARK_TRY(WindowSpec checked, spec_from_json(spec_to_json(spec)));
  (void)checked;
  // The expanded list as given, not copied (30 000 paths: 9 ms of the agent's loop).
  std::vector<fs::path> own_files;
  if (!spec.files.empty() && !expanded) {
    SPARK_TRY(own_files, expand_window_files(spec.files));
  }
  const std::vector<fs::path>& files = expanded && !spec.files.empty() ? *expanded : own_files;
  CacheMode cache = spec.cache.value_or(files.empty() ? CacheMode::off : CacheMode::evict);
  if (cache == CacheMode::evict && files.empty())
    return input_error("--cache evict needs the model files (--files PATH...); use --cache drop when they are unknown");
  std::vector<std::string> devices;
  uint64_t ra = spec.readahead_kb.value_or(k_default_window_readahead_kb);
  if (ra > 0) {
    for (const auto& d : spec.devices) {
      SPARK_TRY(std::string dev, readahead_device_by_name(paths_, d));
      if (std::find(devices.begin(), devices.end(), dev) == devices.end()) devices.push_back(dev);
    }
    if (spec.devices.empty()) {
      for (const auto& f : files) {
        auto dev = readahead_device_of_file(paths_, f);
        if (!dev) {
          log_warning("no readahead throttle for " + f.string() + ": " + describe(dev.error()));
          continue;
        }
        if (std::find(devices.begin(), devices.end(), *dev) == devices.end()) devices.push_back(*dev);
      }
    }
  } else if (!spec.devices.empty()) {
    for (const auto& d : spec.devices) SPARK_TRY_VOID(readahead_device_by_name(paths_, d));
    if (!spec.readahead_kb)
      return input_error("--device names a device to throttle: give the readahead with --readahead SIZE (e.g. 128k)");
  }
  Fd pidfd;
  uint64_t pid_start = 0;
  if (spec.pid > 0) {
    pidfd = open_pidfd(spec.pid);
    if (!pidfd.valid()) return errno_error("watching pid " + std::to_string(spec.pid) + " (no such process?)");
    auto st = read_proc_stat(paths_, spec.pid);
    if (!st) return with_context(st.error(), "watching pid " + std::to_string(spec.pid));
    pid_start = st->start_time;
  }

  // The floor (issue 14 part 2): bad or already crossed floors are refused here, before any change.
  std::optional<FloorSpec> floor;
  {
    SPARK_TRY(MemInfo mem, read_meminfo(paths_));
    std::map<std::string, std::string> none;
    SPARK_TRY(floor, window_floor(
                         spec.floor, profile ? profile->options : none, [] { return unified_memory_host(); }, mem));
  }

  SPARK_TRY(std::string id, next_id());
  WindowRecord r;
  r.id = id;
  r.files.reserve(files.size());
  for (const auto& f : files) r.files.push_back(f.native());
  for (const auto& g : spec.files) r.given.push_back(fs::absolute(g).lexically_normal().string());
  r.file_count = r.files.size();
  for (const auto& pat : spec.files) {
    std::error_code ec;
    if (fs::is_directory(pat, ec)) r.dirs.push_back(fs::absolute(pat).lexically_normal().string());
  }
  r.devices = devices;
  r.readahead_kb = ra;
  r.cache = cache;
  r.cache_interval_ms = spec.cache_interval->count();
  r.mapped = spec.mapped;
  if (spec.read_ahead) r.read_ahead = *spec.read_ahead;
  if (spec.mapped_budget && spec.mapped_budget->bytes) {
    r.mapped_budget = *spec.mapped_budget->bytes;
  } else if (spec.mapped_budget && cache == CacheMode::evict) {
    uint64_t total = 0;
    for (const auto& f : files) {
      std::error_code ec;
      total += fs::file_size(f, ec);
    }
    SPARK_TRY(r.mapped_budget, auto_mapped_budget(paths_, total));
  }
  r.begun_ms = now_real_ms();
  r.deadline_ms = r.begun_ms + spec.ttl->count();
  r.pid = spec.pid;
  r.pid_start = pid_start;
  r.until_port = spec.until_port;
  r.label = spec.label;
  if (floor) r.floor = floor_to_json(*floor);

  // What the overlay will take from MemAvailable, measured before it is applied (issue 14 part 4).
  json reserve;
  if (auto res = overlay_reserve(paths_, *spec.overlay); res) {
    reserve = res->to_json();
    reserve["text"] = res->to_text();
  } else {
    log_debug("window " + id + ": overlay reserve not measured: " + describe(res.error()));
  }

  // 2. One transaction: overlay + readahead (never raised: a device already lower keeps its value).
  std::vector<Change> changes = *spec.overlay;
  for (auto& c : changes) c.reason = "load window " + id;
  for (const auto& dev : devices) {
    SPARK_TRY(uint64_t cur, read_readahead_kb(paths_, dev));
    changes.push_back(readahead_change(dev, std::min(cur, ra), "load window " + id + " readahead throttle"));
  }
  ApplyOptions opt;
  opt.owner_state = record_to_json(r);
  auto applied = tuner_.apply(owner_of(id), changes, opt);
  if (!applied) {
    // The Tuner undid what it wrote; the owner state may remain: remove it.
    (void)tuner_.release(owner_of(id));
    return with_context(applied.error(), "beginning window " + id + " (nothing was changed)");
  }
  auto rt = std::make_unique<Runtime>();
  rt->record = r;
  rt->pidfd = std::move(pidfd);
  rt->reserve = std::move(reserve);
  windows_[id] = std::move(rt);
  SPARK_TRY_VOID(start_runtime(r, keeper_later));
  if (windows_[id]->floor) r.floor["watch"] = windows_[id]->floor->watch_json();  // which sources detect
  std::string begun = "window " + id + " begun: " + std::to_string(files.size()) + " files, cache " +
                      cache_mode_name(cache) + ", readahead " +
                      (devices.empty() ? std::string("unchanged") : std::to_string(ra) + " KiB on " + devices[0]) +
                      ", ttl " + format_duration(*spec.ttl) + (spec.pid ? ", pid " + std::to_string(spec.pid) : "");
  log_info(begun, {{"WINDOW", id}});
  emit(id, "window_begin", begun, record_view_json(r));
  return r;
}

KeeperRecipe WindowManager::recipe_of(const WindowRecord& r) {
  KeeperRecipe k;
  k.id = r.id;
  k.paths = paths_;
  k.act = &tuner_.actuator();
  k.files = r.files;  // paths made of them where it is built
  k.dirs = r.dirs;
  if (r.files.empty()) k.given = r.given;
  k.options.mode = r.cache;
  k.options.mapped = r.mapped;
  k.options.mapped_budget = r.mapped_budget;
  k.options.read_ahead = r.read_ahead;
  // One keeper's pass within the round's budget too (a fresh keeper's 1024 cached files held the
  // loop 25-81 ms in one tick: the soak, issue 13); 0 (tests): no time limit.
  k.options.pass_budget = keeper_budget_;
  k.fds = &fds_;
  return k;
}

std::optional<KeeperRecipe> WindowManager::keeper_recipe(const std::string& id) {
  auto it = windows_.find(id);
  if (it == windows_.end() || !it->second->keeper_waits) return std::nullopt;
  return recipe_of(it->second->record);
}

bool WindowManager::attach_keeper(const std::string& id, std::unique_ptr<CacheKeeper> keeper) {
  auto it = windows_.find(id);
  if (it == windows_.end() || !it->second->keeper_waits || !keeper) return false;
  auto& rt = *it->second;
  rt.keeper_waits = false;
  rt.cache = std::move(keeper);
  rt.next_cache = Clock::now();
  // A resumed window whose list was expanded by the keeper's builder: what `window list` shows
  // (the rest is the keeper's; end_now takes them from it).
  if (rt.record.files.empty())
    for (size_t i = 0; i < rt.cache->files().size() && i < k_listed_files; ++i)
      rt.record.files.push_back(rt.cache->files()[i].string());
  return true;
}

Result<void> WindowManager::start_runtime(const WindowRecord& r, bool keeper_later) {
  auto& rt = windows_.at(r.id);
  auto now = Clock::now();
  int64_t left = r.deadline_ms - now_real_ms();
  rt->deadline = now + std::chrono::milliseconds(std::max<int64_t>(left, 0));
  if (r.pid > 0 && !rt->pidfd.valid()) {
    Fd fd = open_pidfd(r.pid);
    if (fd.valid() && process_alive(paths_, r.pid, r.pid_start)) rt->pidfd = std::move(fd);
  }
  if (r.cache != CacheMode::off) {
    if (keeper_later && keeper_elsewhere(r)) {
      rt->keeper_waits = true;  // keeper_recipe / attach_keeper
    } else {
      rt->cache = recipe_of(r).build();
      rt->next_cache = now;
    }
  }
  rt->next_port = now;
  if (!r.floor.is_null()) {
    SPARK_TRY(FloorSpec fspec, floor_from_json(r.floor));
    std::vector<fs::path> files(r.files.begin(), r.files.end());
    rt->floor = std::make_unique<FloorKeeper>(paths_, tuner_, r.id, files, r.pid, fspec, [this](const Event& e) {
      if (sink_) sink_(e);
    });
    // The floor's own thread (event-driven; window/floor.h); without it this loop ticks it.
    if (auto w = rt->floor->start_watch(); !w) log_warning(describe(w.error()) + "; the agent's loop checks the floor");
  }
  return {};
}

bool keeper_elsewhere(const WindowRecord& r) {
  return r.files.size() > k_keeper_inline_files || !r.dirs.empty() || (r.files.empty() && !r.given.empty());
}

// Without it, what was read since the keeper's last tick stays cached (a `cat` of a 1 GiB model
// left 15 to 138 MiB behind). Nothing for --cache off. Pages a live process still maps stay (the
// kernel skips them). Errors are logged, not fatal: the window's settings are restored either way.
size_t evict_last_time(WindowRecord r) {
  if (r.cache == CacheMode::off) return 0;
  if (auto x = expand_record_files(r); !x)
    log_warning("window " + r.id + ": its files not found again for the last eviction: " + describe(x.error()),
                {{"WINDOW", r.id}});
  size_t failed = 0;
  std::string first_error;
  for (const auto& f : r.files)
    if (auto e = evict_file(f); !e) {
      if (!failed++) first_error = describe(e.error());
    }
  if (failed)
    log_warning("window " + r.id + ": " + std::to_string(failed) + " of " + std::to_string(r.files.size()) +
                    " files not evicted at the end: " + first_error,
                {{"WINDOW", r.id}});
  return failed;
}

namespace {

// A window's record with the files its keeper gained since begin (created in its directories;
// the keeper's list starts with the record's): what its last eviction covers.
void add_keeper_files(WindowRecord& r, const CacheKeeper* keeper) {
  if (!keeper) return;
  const auto& all = keeper->files();
  for (size_t i = r.files.size(); i < all.size(); ++i) r.files.push_back(all[i].string());
}

json cache_stats_json(const CacheKeeperStats& s, uint64_t mapped_budget) {
  return {{"ticks", s.ticks},
          {"evictions", s.evictions},
          {"drops", s.drops},
          {"cold", s.cold_advices},
          {"pageouts", s.pageouts},
          {"probes", s.probes},
          {"kept_in_use", s.kept_in_use},
          {"mapped_bytes", s.mapped_bytes},
          {"behind_pageouts", s.behind_pageouts},
          {"behind_bytes", s.behind_bytes},
          {"follow_passes", s.follow_passes},
          {"read_ahead_bytes", s.read_ahead_bytes},
          {"read_back_bytes", s.read_back_bytes},
          {"read_bytes", s.read_bytes},
          {"reads_dropped", s.reads_dropped},
          {"passes", s.passes},
          {"scans", s.scans},
          {"full_scans", s.full_scans},
          {"drains", s.drains},
          {"files_added", s.files_added},
          {"files_replaced", s.files_replaced},
          {"mapped_budget", mapped_budget},
          {"last_error", s.last_error}};
}

}  // namespace

void WindowManager::emit(const std::string& id, const std::string& type, std::string summary, json data) {
  if (!sink_) return;
  Event e;
  e.source = EventSource::window;
  e.type = type;
  e.subject = id;
  e.summary = std::move(summary);
  e.data = std::move(data);
  sink_(e);
}

Result<void> WindowManager::end_now(const std::string& id, const std::string& reason) {
  bool known = windows_.count(id) > 0;
  // A big window's last eviction with work_elsewhere_: left to take_evictions() once its settings
  // are restored (140-164 ms of the agent's loop for 30 000 files, the soak, issue 13).
  bool elsewhere = false;
  std::optional<WindowRecord> journal_only;
  if (!known) {
    SPARK_TRY(auto journal, tuner_.journal());
    const JournalData& d = *journal;
    auto names = d.owner_names();
    if (std::find(names.begin(), names.end(), owner_of(id)) == names.end())
      return sys_error(ENOENT, "no window '" + id + "' (see spark-tune window list)");
    // A window only in the journal (an agent that never resumed it): its files from its record.
    if (d.owners.contains(owner_of(id)))
      if (auto rec = record_from_json(d.owners.at(owner_of(id))); rec) {
        journal_only = std::move(*rec);
        elsewhere = work_elsewhere_ && journal_only->cache != CacheMode::off && keeper_elsewhere(*journal_only);
        if (!elsewhere) evict_last_time(*journal_only);
      }
  } else {
    const auto& rt = *windows_.at(id);
    elsewhere = work_elsewhere_ && rt.record.cache != CacheMode::off && keeper_elsewhere(rt.record);
    if (!elsewhere) {
      // The keeper's files: those created in the window's directories since begin too.
      WindowRecord r = rt.record;
      add_keeper_files(r, rt.cache.get());
      evict_last_time(std::move(r));
    }
  }
  auto released = tuner_.release(owner_of(id));
  if (!released) return with_context(released.error(), "ending window " + id);
  if (elsewhere && journal_only) evictions_.push_back(std::move(*journal_only));
  json data{{"reason", reason}, {"restored", released->size()}};
  if (known) {
    auto& rt = windows_.at(id);
    if (rt->record.begun_ms > 0) data["duration_ms"] = std::max<int64_t>(now_real_ms() - rt->record.begun_ms, 0);
    data["files"] = std::max(rt->record.files.size(), rt->record.file_count);
    if (rt->cache) data["cache_stats"] = cache_stats_json(rt->cache->stats(), rt->record.mapped_budget);
    if (rt->floor) data["floor"] = rt->floor->finish();  // a paused tree is resumed here
    if (rt->cache)
      log_info("window " + id + " cache: " + std::to_string(rt->cache->stats().evictions) + " evictions, " +
               std::to_string(rt->cache->stats().drops) + " drops, " + std::to_string(rt->cache->stats().pageouts) +
               " pageouts, " + std::to_string(rt->cache->stats().behind_pageouts) + " behind the reader (" +
               format_size(rt->cache->stats().behind_bytes) + "), " + std::to_string(rt->cache->stats().probes) +
               " probes, " + std::to_string(rt->cache->stats().kept_in_use) + " kept in use" +
               (rt->cache->stats().last_error.empty() ? "" : ", last error: " + rt->cache->stats().last_error));
    if (elsewhere) {  // the record is not needed here any more: moved, not copied (30 000 paths)
      WindowRecord r = std::move(rt->record);
      add_keeper_files(r, rt->cache.get());
      evictions_.push_back(std::move(r));
    }
    windows_.erase(id);
  }
  std::string ended =
      "window " + id + " ended (" + reason + "): " + std::to_string(released->size()) + " settings restored";
  log_info(ended, {{"WINDOW", id}, {"REASON", reason}});
  emit(id, "window_end", ended, std::move(data));
  return {};
}

Result<void> WindowManager::end(const std::string& id, const std::string& reason) {
  EndReserve::Spend spend(reserve_);
  return end_now(id, reason);
}

bool WindowManager::end_logged(const std::string& id, const std::string& reason, Clock::time_point now) {
  auto r = end(id, reason);
  if (r) return true;
  auto it = windows_.find(id);
  if (it == windows_.end()) {
    log_error(describe(r.error()) + "; run spark-tune revert");
    return false;
  }
  auto& rt = *it->second;
  rt.end_retry.reason = reason;
  auto wait = rt.end_retry.failed(now);
  log_error("window " + id + " could not end (" + reason + "): " + describe(r.error()) + "; retrying in " +
                format_duration(wait) + " (or run spark-tune revert)",
            {{"WINDOW", id}});
  return false;
}

Result<std::vector<std::string>> WindowManager::end_all(const std::string& reason) {
  std::vector<std::string> ids;
  for (const auto& [id, rt] : windows_) ids.push_back(id);
  // Windows only in the journal (an agent that never resumed them).
  SPARK_TRY(auto d, tuner_.journal());
  for (const auto& o : d->owner_names())
    if (o.rfind("window:", 0) == 0 && !windows_.count(o.substr(7))) ids.push_back(o.substr(7));
  std::vector<std::string> ended;
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    SPARK_TRY_VOID(end(*it, reason));
    ended.push_back(*it);
  }
  return ended;
}

std::vector<WindowRecord> WindowManager::list() const {
  std::vector<WindowRecord> out;
  for (const auto& [id, rt] : windows_) out.push_back(rt->record);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.begun_ms < b.begun_ms; });
  return out;
}

namespace {

// What each owner holds, from the journal: target, the value it set, the value beneath it. One
// pass over the journal for a whole window.list (it was one per window, each layer's owner
// compared with a name built anew: issue 13, the soak).
std::map<std::string, json> changes_by_owner(const JournalData* journal) {
  std::map<std::string, json> out;
  if (!journal) return out;
  for (const auto& t : journal->targets)
    for (const auto& l : t.layers) {
      if (l.owner.rfind("window:", 0) != 0) continue;
      auto [it, fresh] = out.try_emplace(l.owner, json::array());
      it->second.push_back({{"target", t.target.display()},
                            {"value", l.value ? json(*l.value) : json()},
                            {"previous", l.previous ? json(*l.previous) : json()}});
    }
  return out;
}

json describe_runtime(const WindowRecord& rec, WindowManager::Clock::time_point deadline, const CacheKeeper* cache,
                      const FloorKeeper* floor, const json& reserve, std::map<std::string, json>& changes) {
  json j = record_view_json(rec);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - WindowManager::Clock::now()).count();
  j["ttl_left_ms"] = std::max<int64_t>(left, 0);
  auto mine = changes.find(owner_of(rec.id));
  j["changes"] = mine == changes.end() ? json::array() : std::move(mine->second);
  if (cache) j["cache_stats"] = cache_stats_json(cache->stats(), rec.mapped_budget);
  if (!reserve.is_null()) j["overlay_reserve"] = reserve;
  if (floor && j["floor"].is_object()) j["floor"]["watch"] = floor->watch_json();
  return j;
}

}  // namespace

json WindowManager::describe_window(const std::string& id) const {
  auto it = windows_.find(id);
  if (it == windows_.end()) return nullptr;
  auto d = tuner_.journal();
  auto changes = changes_by_owner(d ? d->get() : nullptr);
  const auto& rt = *it->second;
  return describe_runtime(rt.record, rt.deadline, rt.cache.get(), rt.floor.get(), rt.reserve, changes);
}

json WindowManager::describe_windows() const {
  auto d = tuner_.journal();
  auto changes = changes_by_owner(d ? d->get() : nullptr);
  std::vector<const Runtime*> rts;
  for (const auto& [id, rt] : windows_) rts.push_back(rt.get());
  std::sort(rts.begin(), rts.end(),
            [](const Runtime* a, const Runtime* b) { return a->record.begun_ms < b->record.begun_ms; });
  json out = json::array();
  for (const Runtime* rt : rts)
    out.push_back(describe_runtime(rt->record, rt->deadline, rt->cache.get(), rt->floor.get(), rt->reserve, changes));
  return out;
}

Result<std::vector<std::string>> WindowManager::recover() {
  SPARK_TRY(JournalData d, read_journal(paths_));
  std::vector<std::string> ended;
  int64_t now = now_real_ms();
  for (const auto& owner : d.owner_names()) {
    if (owner.rfind("window:", 0) != 0) continue;
    std::string id = owner.substr(7);
    if (windows_.count(id)) continue;
    // Processes the floor stopped (SIGSTOP) when the agent went away: never left stopped.
    if (d.owners.contains(owner) && d.owners[owner].contains("floor_stopped")) {
      int continued = 0;
      for (const auto& e : d.owners[owner]["floor_stopped"]) {
        pid_t p = e.value("pid", 0);
        uint64_t start = e.value("start", uint64_t{0});
        if (p > 0 && process_alive(paths_, p, start ? std::optional<uint64_t>(start) : std::nullopt) &&
            ::kill(p, SIGCONT) == 0)
          ++continued;
      }
      log_warning("window " + id + ": " + std::to_string(continued) +
                  " processes the floor had stopped continued at agent start (SIGCONT)");
      d.owners[owner].erase("floor_stopped");
      (void)tuner_.set_owner_state(owner, d.owners[owner]);
    }
    std::string why;
    std::optional<WindowRecord> rec;
    if (!d.owners.contains(owner)) {
      why = "no window state in the journal";
    } else if (auto r = record_from_json(d.owners[owner]); !r) {
      why = describe(r.error());
    } else {
      rec = *r;
      if (rec->deadline_ms <= now)
        why = "TTL ran out while the agent was down";
      else if (rec->pid > 0 && !process_alive(paths_, rec->pid, rec->pid_start))
        why = "watched process " + std::to_string(rec->pid) + " is gone";
    }
    if (!why.empty()) {
      // Ended through the one end path: with the reserve, and on failure kept and retried with
      // the backoff by the timer (never given up, never a failed agent start).
      // Its files expanded again by its last eviction (evict_last_time: here, or on the worker).
      auto rt = std::make_unique<Runtime>();
      if (rec) rt->record = std::move(*rec);
      rt->record.id = id;
      rt->deadline = Clock::now();
      windows_[id] = std::move(rt);
      log_info("window " + id + " ending at agent start: " + why, {{"WINDOW", id}, {"REASON", why}});
      if (end_logged(id, why, Clock::now())) ended.push_back(id);
      continue;
    }
    // With work_elsewhere_, a big window's list is expanded and its keeper built on the caller's
    // worker (keeper_recipe / attach_keeper): 178-341 ms of the agent's loop for 30 000 files, the
    // soak (issue 13). A floor needs the files at once: expanded here.
    bool later = work_elsewhere_ && rec->cache != CacheMode::off && keeper_elsewhere(*rec);
    if (!later || !rec->floor.is_null())
      if (auto x = expand_record_files(*rec); !x)
        log_warning("window " + id + ": its files not found again: " + describe(x.error()) +
                    " (its directories are still followed)");
    auto rt = std::make_unique<Runtime>();
    rt->record = *rec;
    windows_[id] = std::move(rt);
    SPARK_TRY_VOID(start_runtime(*rec, later));
    log_info("window " + id + " resumed after agent restart", {{"WINDOW", id}});
    emit(id, "window_resume", "window " + id + " resumed after agent restart", record_view_json(*rec));
  }
  return ended;
}

std::vector<int> WindowManager::poll_fds() const {
  std::vector<int> fds;
  for (const auto& [id, rt] : windows_) {
    if (rt->pidfd.valid()) fds.push_back(rt->pidfd.get());
    if (rt->floor && rt->floor->psi_fd() >= 0) fds.push_back(rt->floor->psi_fd());
  }
  return fds;
}

void WindowManager::on_ready(int fd, Clock::time_point now) {
  for (const auto& [id, rt] : windows_)
    if (rt->floor && rt->floor->psi_fd() == fd) {
      rt->floor->on_psi(now);  // memory stalls: the floor checks now, not at its next 10 ms
      return;
    }
  std::string hit;
  for (const auto& [id, rt] : windows_)
    if (rt->pidfd.get() == fd) hit = id;
  if (hit.empty()) return;
  pid_t pid = windows_.at(hit)->record.pid;
  emit(hit, "window_process_exit", "window " + hit + ": watched process " + std::to_string(pid) + " exited",
       {{"pid", pid}});
  if (!end_logged(hit, "watched process " + std::to_string(pid) + " exited", now)) {
    // Retried by the timer; the pidfd stays readable, so it leaves the poll set.
    windows_.at(hit)->pidfd.reset();
  }
}

std::optional<WindowManager::Clock::time_point> WindowManager::next_timer() const {
  std::optional<Clock::time_point> t;
  auto take = [&](Clock::time_point x) { t = t ? std::min(*t, x) : x; };
  for (const auto& [id, rt] : windows_) {
    if (rt->end_retry.pending()) {  // an end that failed: only its retry is due
      take(*rt->end_retry.at);
      continue;
    }
    take(rt->deadline);
    if (rt->cache) take(rt->next_cache);
    if (rt->floor) take(rt->floor->next_check());
    if (!rt->record.until_port.empty()) take(rt->next_port);
    if (rt->record.pid > 0 && !rt->pidfd.valid()) take(Clock::now() + std::chrono::milliseconds(200));
  }
  return t;
}

void WindowManager::on_timer(Clock::time_point now) {
  // (id, why, the event that says why, its data)
  struct Ending {
    std::string id, why, type;
    json data;
  };
  std::vector<Ending> to_end;
  std::vector<std::string> retries;
  TickHost host(paths_, windows_);
  // In turn from the window after the one whose keeper ticked last; past the budget, the keepers
  // still due wait for the next round (they stay due: the loop comes back at once, after serving
  // the clients that are waiting).
  std::vector<std::pair<const std::string, std::unique_ptr<Runtime>>*> order;
  order.reserve(windows_.size());
  for (auto it = windows_.upper_bound(keeper_turn_); it != windows_.end(); ++it) order.push_back(&*it);
  for (auto it = windows_.begin(); it != windows_.end() && it->first <= keeper_turn_; ++it) order.push_back(&*it);
  auto budget_end = Clock::now() + keeper_budget_;
  bool ticked = false;
  for (auto* entry : order) {
    const std::string& id = entry->first;
    auto& rt = entry->second;
    if (rt->end_retry.pending()) {
      if (rt->end_retry.due(now)) retries.push_back(id);
      continue;
    }
    // The floor first: its 10 ms check is what reacts before the driver or the kernel does.
    if (rt->floor && now >= rt->floor->next_check()) rt->floor->tick(now);
    if (now >= rt->deadline) {
      to_end.push_back(
          {id, "TTL ran out", "window_ttl_expired", {{"ttl_ms", rt->record.deadline_ms - rt->record.begun_ms}}});
      continue;
    }
    if (rt->record.pid > 0 && !rt->pidfd.valid() && !process_alive(paths_, rt->record.pid, rt->record.pid_start)) {
      to_end.push_back({id,
                        "watched process " + std::to_string(rt->record.pid) + " is gone",
                        "window_process_exit",
                        {{"pid", rt->record.pid}}});
      continue;
    }
    if (!rt->record.until_port.empty() && now >= rt->next_port) {
      rt->next_port = now + std::chrono::milliseconds(250);
      if (!rt->port_probe)
        if (auto hp = parse_port_address(rt->record.until_port)) rt->port_probe = std::make_unique<PortProbe>(*hp);
      if (rt->port_probe && rt->port_probe->ready(now)) {
        to_end.push_back({id,
                          rt->record.until_port + " accepts connections",
                          "window_port_ready",
                          {{"address", rt->record.until_port}}});
        continue;
      }
    }
    if (rt->cache && now >= rt->next_cache) {
      if (ticked && Clock::now() >= budget_end) continue;  // its turn comes in the next round
      // The first keeper of the round has its own pass budget (the round's, recipe_of); the others
      // stop their pass where the round's budget ends.
      host.set_deadline(ticked ? std::optional<Clock::time_point>(budget_end) : std::nullopt);
      ticked = true;
      keeper_turn_ = id;
      rt->cache->tick(now, host);
      rt->next_cache = aligned_tick(now, std::chrono::milliseconds(rt->record.cache_interval_ms));
    }
  }
  for (auto& x : to_end) {
    emit(x.id, x.type, "window " + x.id + ": " + x.why, std::move(x.data));
    end_logged(x.id, x.why, now);
  }
  for (const auto& id : retries) {
    auto it = windows_.find(id);
    if (it == windows_.end()) continue;
    std::string why = it->second->end_retry.reason.empty() ? std::string("retry") : it->second->end_retry.reason;
    end_logged(id, why, now);
  }
}

}  // namespace spark::window
