// Load windows: a temporary overlay of sysctls, a readahead throttle on the devices behind the model
// files and page-cache control, all undone at the end (ended, TTL, watched process exit, readiness
// port), including after an agent crash (the journal holds every window: see WindowManager::recover).
//
// Every change is made through the Tuner as owner "window:<id>", so overlapping windows stack layers
// per key/device and the original value comes back only when the last one ends, in either order.
// The window's runtime state (deadline, watched pid and its start time, files, cache mode) is the
// owner state in the journal.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/end_retry.h"
#include "core/event.h"
#include "core/host_paths.h"
#include "core/result.h"
#include "tune/page_cache.h"
#include "tune/tuner.h"
#include "window/floor.h"

namespace spark::window {

inline constexpr std::chrono::milliseconds k_default_window_ttl{180'000};
inline constexpr std::chrono::milliseconds k_max_window_ttl{24 * 3600'000};
inline constexpr std::chrono::milliseconds k_default_cache_interval{100};
// Windows open at once in one agent (docs/cli.md, "Limits"); one more is refused with EBUSY.
inline constexpr size_t k_max_windows = 64;
// Readahead during a window when none is asked for: 0, the devices are left alone. Chosen by
// bench/load_window (docs/benchmarks-load-window.md): with evict keeping the cache low, a throttle
// did not lower the page-cache peak and made mmap loads slower (128 KiB: about 2.5x the untuned
// time; 8 KiB, the recipe's: about 10x); `--readahead SIZE` throttles when wanted.
inline constexpr uint64_t k_default_window_readahead_kb = 0;

inline constexpr const char* k_window_profile = "load-window";

// A window's profile (policies/load-window.toml, or the operator's copy under /etc/spark-tune):
// its sysctl overlay resolved against this host (">200" keeps a higher value...) and its
// [window] options ("window.cache", "window.cache_interval", "window.ttl", "window.readahead"),
// which are the defaults of every option the window was not given.
struct WindowProfile {
  std::string name;
  std::vector<tune::Change> overlay;
  std::map<std::string, std::string> options;
};
Result<WindowProfile> load_window_profile(const HostPaths& paths, tune::Actuator& act,
                                          const std::string& name = k_window_profile);
// Only the overlay of the load-window profile.
Result<std::vector<tune::Change>> load_window_overlay(const HostPaths& paths, tune::Actuator& act);

// --mapped-budget as asked: a size, or auto (bytes nullopt: auto_mapped_budget at begin).
struct MappedBudget {
  std::optional<uint64_t> bytes;
};

// What a window is asked to do (CLI options / the window.begin request).
struct WindowSpec {
  std::vector<std::string> files;                           // paths, directories, globs
  std::vector<std::string> devices;                         // --device names
  std::optional<uint64_t> readahead_kb;                     // nullopt: k_default_window_readahead_kb; 0: no throttle
  std::optional<tune::CacheMode> cache;                     // nullopt: evict with files, off without
  std::optional<std::chrono::milliseconds> cache_interval;  // nullopt: profile, else 100ms
  tune::MappedPolicy mapped = tune::MappedPolicy::idle;
  std::optional<MappedBudget> mapped_budget;  // nullopt: the profile's, else 0
  std::optional<uint64_t> read_ahead;  // bytes read ahead of a mapped loader's reader; nullopt: CacheKeeperOptions'
  std::optional<std::chrono::milliseconds> ttl;      // nullopt: profile, else 180s
  pid_t pid = 0;                                     // watched process; 0 = none
  std::string until_port;                            // "HOST:PORT": ends when it accepts connections
  std::optional<std::vector<tune::Change>> overlay;  // nullopt: the profile's overlay
  std::string profile;                               // empty: load-window
  std::string label;                                 // free text for `window list` (the command of `run`)
  std::optional<FloorAsk> floor;  // --free-floor/--available-floor/--on-floor/--force (window/floor.h)
};

nlohmann::json spec_to_json(const WindowSpec& s);
// Validates as it parses: unknown cache mode, TTL 0 or above 24 h, bad port... are input errors.
Result<WindowSpec> spec_from_json(const nlohmann::json& j);

// A window's file list goes into the journal whole up to this many files; past it the journal
// keeps the paths as the user gave them (`given`) and a recovery expands them again: every journal
// write (each begin and end of any window) would otherwise copy the whole list (a 100 000-file
// window: about 10 MB per write).
inline constexpr size_t k_journal_inline_files = 256;
// Files listed by `window list` / window.begin's reply and the window events (file_count has them all).
inline constexpr size_t k_listed_files = 32;
// The keepers' ticks in one round of the agent's loop: once they have taken this long, the keepers
// still due wait for the next round (the clients that came meanwhile are served first), taken in
// turn so that none waits for ever. The soak (issue 13): 51 keepers due in the same round held a
// ping 30-77 ms (p99 / max of the window timer).
inline constexpr std::chrono::milliseconds k_keeper_round_budget{5};

// A window's cache keeper is built where it is begun up to this many files; past it, or with a
// directory named (its tree is walked), begin(..., keeper_later) leaves it to be built elsewhere
// (KeeperRecipe) and attached when ready: the agent builds it on its worker thread, since the
// keeper's constructor stats every file (the soak, issue 13: a 30 000-file window's begin held the
// agent's loop 178-341 ms once its tree was expanded).
inline constexpr size_t k_keeper_inline_files = 1024;

// What a window's keeper is built from. build() may run on any thread: it stats the files and walks
// the named directories, and keeps the actuator's and the descriptor cache's addresses for its
// ticks (made on the manager's thread, once attached), touching neither.
struct KeeperRecipe {
  std::string id;
  HostPaths paths;
  tune::Actuator* act = nullptr;
  std::vector<std::string> files;
  std::vector<std::string> dirs;
  // With no files: the paths as the user gave them, expanded first (a window resumed after an
  // agent restart whose journal kept only these: walking its tree is the worker's too).
  std::vector<std::string> given;
  tune::CacheKeeperOptions options;
  tune::FdCache* fds = nullptr;
  std::unique_ptr<tune::CacheKeeper> build() const;
};

// A begun window as the journal keeps it.
struct WindowRecord {
  std::string id;
  std::vector<std::string> files;    // expanded (from the journal: empty when only `given` was kept)
  std::vector<std::string> given;    // the paths as the user gave them (--files: files, dirs, globs)
  size_t file_count = 0;             // files.size() at begin (kept when the list is not)
  std::vector<std::string> dirs;     // the directories given: files created in them later are the window's too
  std::vector<std::string> devices;  // throttled devices
  uint64_t readahead_kb = 0;
  tune::CacheMode cache = tune::CacheMode::off;
  int64_t cache_interval_ms = 100;
  tune::MappedPolicy mapped = tune::MappedPolicy::idle;
  uint64_t mapped_budget = 0;  // bytes; 0: idle mappings are paged out at once (records before the budget)
  uint64_t read_ahead = tune::CacheKeeperOptions{}.read_ahead;  // bytes; 0: off
  int64_t deadline_ms = 0;                                      // CLOCK_REALTIME ms
  int64_t begun_ms = 0;
  pid_t pid = 0;
  uint64_t pid_start = 0;  // /proc/PID/stat starttime: a reused pid is not ours
  std::string until_port;
  std::string label;
  nlohmann::json floor;  // the resolved FloorSpec (floor_to_json); null: no floor
};
// The journal's form: the file list inline up to k_journal_inline_files, else only `given`.
nlohmann::json record_to_json(const WindowRecord& r);
Result<WindowRecord> record_from_json(const nlohmann::json& j);
// What a reply or an event shows: the record with at most k_listed_files files and file_count.
nlohmann::json record_view_json(const WindowRecord& r);
// A record read from the journal without its list: the files expanded again from `given` (what is
// there now; a directory's new files included). Nothing to do when the list is inline.
Result<void> expand_record_files(WindowRecord& r);
// Whether a window's keeper, or its last eviction, is work for another thread than the agent's
// loop: past k_keeper_inline_files files, over a directory, or a list the journal did not keep
// (expanded again from `given`).
bool keeper_elsewhere(const WindowRecord& r);
// The last eviction of a window's files as it ends (end, TTL, process exit, recovery): what was
// read since the keeper's last tick would otherwise stay cached. One open and POSIX_FADV_DONTNEED
// per file (its list expanded from `given` first when empty), nothing of a WindowManager touched:
// safe on any thread (the agent's worker does a big window's: 140-164 ms of its loop for 30 000
// files, the soak). Returns how many files could not be evicted (logged).
size_t evict_last_time(WindowRecord r);

// The page cache a window's mapped files may hold before mappings their processes are done with
// are paged out, when asked for "auto": what stays available once the files themselves are in
// memory, less a reserve of 10% of RAM. MemAvailable - files - 10% of MemTotal, at least 0. A
// model as large as what is free (on a unified-memory host its GPU copy comes from the same RAM)
// gets its done shards paged out as it loads; a small one on a roomy host is left alone. Not the
// default: measured, paging out at once was faster as well as lower (docs/benchmarks-load-window.md).
Result<uint64_t> auto_mapped_budget(const HostPaths& paths, uint64_t files_bytes);
// "auto" -> nullopt, a size -> bytes.
Result<std::optional<uint64_t>> parse_mapped_budget(const std::string& s);
// --read-ahead and the profile's window.read_ahead: "off" (or 0) -> 0, a size -> bytes.
Result<uint64_t> parse_read_ahead(const std::string& s);

// A window's --files as begin takes them: pseudo file systems refused, directories and globs
// expanded (tune/file_set.h). Touches no state of a WindowManager: safe on any thread.
Result<std::vector<fs::path>> expand_window_files(const std::vector<std::string>& given);
// Whether expanding these is cheap enough for the agent's loop: each names one regular file
// (no directory, no glob pattern).
bool plain_window_files(const std::vector<std::string>& given);

class WindowManager {
 public:
  using Clock = std::chrono::steady_clock;
  WindowManager(HostPaths paths, tune::Tuner& tuner);
  ~WindowManager();

  // Validates, applies every change as one transaction (all or nothing), starts the runtime.
  // `files`: spec.files already expanded by expand_window_files (the agent does that on a worker
  // thread: a tree of 30 000 files held its loop 0.3-3 s); null: expanded here.
  // `keeper_later`: a keeper past k_keeper_inline_files files (or over a directory) is not built
  // here: keeper_recipe(id) says what to build, attach_keeper gives it to the window (until then the
  // window's settings are applied and nothing is evicted).
  Result<WindowRecord> begin(const WindowSpec& spec, const std::vector<fs::path>* files = nullptr,
                             bool keeper_later = false);
  // The keeper a window begun with keeper_later still waits for; nullopt when none waits.
  std::optional<KeeperRecipe> keeper_recipe(const std::string& id);
  // Gives a window the keeper built from its recipe; false when the window has ended meanwhile (the
  // keeper is dropped) or waits for none.
  bool attach_keeper(const std::string& id, std::unique_ptr<tune::CacheKeeper> keeper);
  Result<void> end(const std::string& id, const std::string& reason);
  Result<std::vector<std::string>> end_all(const std::string& reason);
  std::vector<WindowRecord> list() const;
  nlohmann::json describe_window(const std::string& id) const;
  // Every window, oldest first, with one read of the journal (window.list).
  nlohmann::json describe_windows() const;

  // Where the window events go (window_begin, window_end, window_ttl_expired, ...): the agent's
  // event log. None: the windows say nothing but their log lines.
  void set_event_sink(EventSink sink) { sink_ = std::move(sink); }

  // At agent start: windows in the journal whose TTL passed or whose process is gone are ended,
  // the others resumed. Returns the ids ended.
  Result<std::vector<std::string>> recover();

  // Event-loop integration: pidfds of watched processes, the next deadline, and the handlers.
  std::vector<int> poll_fds() const;
  void on_ready(int fd, Clock::time_point now);
  std::optional<Clock::time_point> next_timer() const;
  void on_timer(Clock::time_point now);
  // The keepers' share of one on_timer (k_keeper_round_budget; tests set 0: one keeper per call).
  // Also each keeper's pass budget (CacheKeeperOptions::pass_budget) for keepers built afterwards.
  void set_keeper_round_budget(std::chrono::milliseconds b) { keeper_budget_ = b; }

  // The big windows' work left to the caller's worker thread (the agent's: issue 13, the soak):
  // an end (request, TTL, process exit, recovery) restores the settings at once and keeps the
  // record of a keeper_elsewhere window with a cache for take_evictions() instead of evicting its
  // files (evict_last_time); recover() resumes such a window without its keeper (keeper_recipe /
  // attach_keeper, as begin's keeper_later) and without expanding its list. Off: all done here.
  void set_work_elsewhere(bool on) { work_elsewhere_ = on; }
  // The last evictions left since the last call, in the order the windows ended.
  std::vector<WindowRecord> take_evictions() { return std::exchange(evictions_, {}); }

 private:
  struct Runtime;
  class TickHost;
  Result<void> start_runtime(const WindowRecord& r, bool keeper_later = false);
  KeeperRecipe recipe_of(const WindowRecord& r);
  Result<std::string> next_id();
  // Ends the window; on failure the window stays and is retried with exponential backoff
  // (100 ms doubling to 60 s), each failure logged: never a tight loop (issue 13 defect 1).
  bool end_logged(const std::string& id, const std::string& reason, Clock::time_point now);
  Result<void> end_now(const std::string& id, const std::string& reason);
  void emit(const std::string& id, const std::string& type, std::string summary, nlohmann::json data);
  Clock::time_point aligned_tick(Clock::time_point now, std::chrono::milliseconds interval) const;

  // What ending a window needs, held from the start (core/end_retry.h): an end never depends on a
  // free descriptor (issue 13 defect 1: a keeper that held one per file left the TTL end unable
  // to open the journal).
  HostPaths paths_;
  tune::Tuner& tuner_;
  tune::FdCache fds_{tune::k_keeper_fd_capacity};  // before windows_: their keepers give their descriptors back to it
  EndReserve reserve_;
  std::map<std::string, std::unique_ptr<Runtime>> windows_;
  EventSink sink_;
  uint64_t last_seq_ = 0;                   // the last id's number (next_id)
  Clock::time_point epoch_ = Clock::now();  // ticks of windows with the same interval fall together
  std::chrono::milliseconds keeper_budget_ = k_keeper_round_budget;
  std::string keeper_turn_;  // the window whose keeper ticked last: the next round starts after it
  bool work_elsewhere_ = false;
  std::vector<WindowRecord> evictions_;  // set_work_elsewhere: ended windows whose files wait for their last eviction
};

}  // namespace spark::window
