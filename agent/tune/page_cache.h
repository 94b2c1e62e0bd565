// Page-cache control for load windows: keep the window's own files out of the cache (evict), or the
// known manual recipe (drop), and measure what is cached (mincore).
//
// evict: POSIX_FADV_DONTNEED over every window file at each tick. It drops clean, unmapped pages of
// those files only: every other file keeps its cache. Pages that a process still maps are skipped
// by the kernel (mapping_evict_folio refuses mapped folios), so an mmap loader needs more:
//
// Mapped pages (measured, see docs/benchmarks-load-window.md): every `mapped_period` the keeper finds
// the mappings of the window files in every process (<proc>/PID/maps, matched by device and inode)
// and follows each mapping (VMA) by its present page-table entries (PAGEMAP_SCAN over the VMA's
// range; smaps on kernels before 6.7):
//   - while it grows, its process is reading it: left alone;
//   - once it stops growing, it is probed once: process_madvise(MADV_PAGEOUT) of a few sample
//     blocks spread over it (one 2 MiB block, aligned in the file so that no large folio has to be
//     split, per 128 MiB; 4 to 64 blocks), and the keeper notes which samples left the mapping;
//   - `idle_after` later, the samples tell: none mapped again means the process is done with the
//     mapping (a loader that copied the weights out): MADV_PAGEOUT of the whole mapping frees its
//     clean file pages. A sample mapped again means the process uses the mapping in place (a CPU
//     llama.cpp server reading its weights): it is never paged out in this window, so its next
//     request does not fault the model back in; it re-read 1/512 of its pages once.
//   - where no sample page could be unmapped (a large folio that would not split, a page shared
//     with another process), the probe falls back to MADV_COLD of the whole mapping, and smaps'
//     Referenced after `idle_after` decides the same way. The sampled probe exists because the
//     whole-mapping MADV_COLD, and reading smaps every scan, cost the agent most of a core during
//     a 4 GiB mmap load on a 2-core host (measured).
//   - a file that some process maps is not fadvised while mapped: DONTNEED cannot drop its mapped
//     pages, deactivates them, and drops the read-around pages the loader is about to fault in
//     (measured: an mmap load 2.5x slower). It is evicted again once no process maps it.
// A budget (CacheKeeperOptions::mapped_budget) lets the mapped pages stay while they are few
// enough: nothing is probed or paged out until the files' mapped pages in all processes exceed it.
// MappedPolicy::cold only applies MADV_COLD (pages reclaimed first under pressure, never forced out);
// pageout pages out every mapping that stopped growing, without a probe; off leaves mapped pages
// alone.
//
// drop: writes 3 to vm/drop_caches at each tick, the manual recipe (every process loses its cache).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/fd.h"
#include "core/host_paths.h"
#include "core/result.h"
#include "tune/actuator.h"
#include "tune/file_reads.h"
#include "tune/file_set.h"
#include "tune/process_mappings.h"

namespace spark::tune {

enum class CacheMode { off, evict, drop };
enum class MappedPolicy { idle, cold, pageout, off };

const char* cache_mode_name(CacheMode m);
Result<CacheMode> parse_cache_mode(const std::string& s);
const char* mapped_policy_name(MappedPolicy p);
Result<MappedPolicy> parse_mapped_policy(const std::string& s);

// Host-wide page counts from <proc>/vmstat: a keeper skips its work while they do not move.
struct HostPageCounts {
  uint64_t file_pages = 0;  // nr_file_pages: the page cache
  uint64_t mapped = 0;      // nr_mapped: page-cache pages mapped by some process
};
Result<HostPageCounts> read_host_page_counts(const HostPaths& paths);
// The counts read once, at the first ask: what a KeeperHost's counts() gives for one tick.
class LazyPageCounts {
 public:
  explicit LazyPageCounts(const HostPaths& paths) : paths_(paths) {}
  const HostPageCounts* get();  // nullptr: unreadable

 private:
  const HostPaths& paths_;
  bool read_ = false;
  std::optional<HostPageCounts> counts_;
};

// What the keepers of one agent share in a tick: the host's page counts read once, and one scan of
// every process's mappings made for all windows (80 windows over the same model cost one scan,
// issue 13 defect 11). Both are read at first use in the tick.
class KeeperHost {
 public:
  virtual ~KeeperHost() = default;
  virtual const HostPageCounts* counts() = 0;  // nullptr: unreadable (the keeper then works as if they moved)
  virtual const ProcessMappings& mappings() = 0;
  // When the keeper's evict pass must stop in this tick, besides its own pass_budget (the round's
  // budget once another keeper has ticked in it); nullopt: only pass_budget.
  virtual std::optional<std::chrono::steady_clock::time_point> deadline() const { return std::nullopt; }
};

struct CacheKeeperOptions {
  CacheMode mode = CacheMode::evict;
  MappedPolicy mapped = MappedPolicy::idle;
  std::chrono::milliseconds mapped_period{250};
  std::chrono::milliseconds idle_after{1000};
  uint64_t sample_block = 2ULL << 20;    // one sample block (file-aligned) ...
  uint64_t sample_every = 128ULL << 20;  // ... per this many bytes of a mapping,
  size_t min_samples = 4, max_samples = 64;
  // Mappings are probed and paged out only while the window files' mapped pages (all processes)
  // exceed this many bytes; mappings already probed finish their probe. 0: always.
  uint64_t mapped_budget = 0;
  // Files visited per tick when a window names more (the others are visited in the next ticks,
  // round robin; a file found cached is visited every tick until it is not): one tick never holds
  // the agent's loop for long (issue 13).
  size_t files_per_tick = 1024;
  // ... and a pass stops once it has taken this long (0: no time limit), resumed at the next tick
  // where it stopped: a fresh keeper finds its files cached and opens, cachestats and fadvises
  // each, and 1024 of them held the agent's loop 25-81 ms in one tick (the soak, issue 13). The
  // agent gives each keeper the loop's round budget (k_keeper_round_budget). At least one file is
  // visited per pass.
  std::chrono::microseconds pass_budget{0};
  // Where the pass reads the time for pass_budget (and KeeperHost::deadline); empty: steady_clock.
  // Tests set a clock that advances per call, so that slicing does not depend on timing.
  std::function<std::chrono::steady_clock::time_point()> clock;
  // Page out behind the reader inside a growing mapping (MappedPolicy::idle; 0 turns it off): what
  // the reader passed more than behind_lag ago, once sample blocks there stayed out behind_wait.
  uint64_t behind_lag = 64ULL << 20;
  std::chrono::milliseconds behind_wait{100};
  // Once a mapping's reader is known to be a loader, a thread of the keeper's own follows it at
  // this period, independent of the owner's tick (a late tick during a 400 MB/s load is 100-200
  // MiB more cache): a walk of the page tables from what was paged out to the end of the mapping
  // (not the whole mapping), and MADV_PAGEOUT of what is behind_lag behind the front once at
  // least follow_chunk of it is due (fewer, larger page-outs: fewer TLB shootdowns of the
  // reader's CPU). The thread sleeps while no mapping is followed. 0: no thread, the tick does it.
  std::chrono::milliseconds follow_period{10};
  uint64_t follow_chunk = 8ULL << 20;
  // Read ahead of a loader's reader (issue 14, the stretch): the follower asks for this many bytes
  // of the file in front of the front, half of it at a time once half of it is due, so the loader
  // faults on cached pages instead of waiting on each fault's read-around; within the cache the
  // window keeps anyway (the lag behind + this in front). The keeper's reader thread makes the
  // reads (FileReader: in steps that one readahead(2) reads whole). 0: off.
  uint64_t read_ahead = 32ULL << 20;
  std::chrono::milliseconds names_period{1000};
  // With nothing moving on the host (its page-cache and mapped page counts), files with no cached
  // page are still checked this often.
  std::chrono::milliseconds idle_recheck{2000};
};

struct CacheKeeperStats {
  uint64_t ticks = 0;
  uint64_t evictions = 0;         // fadvise calls
  uint64_t drops = 0;             // drop_caches writes
  uint64_t cold_advices = 0;      // MADV_COLD ranges
  uint64_t pageouts = 0;          // MADV_PAGEOUT of whole mappings
  uint64_t probes = 0;            // sampled probes (MADV_PAGEOUT of sample pages)
  uint64_t kept_in_use = 0;       // mappings found in use and left alone
  uint64_t mapped_bytes = 0;      // the window files' mapped pages at the last scan, all processes
  uint64_t behind_pageouts = 0;   // MADV_PAGEOUT of regions behind a reader
  uint64_t behind_bytes = 0;      // bytes of mappings those covered
  uint64_t follow_passes = 0;     // passes of the follower thread that had a mapping to follow
  uint64_t read_ahead_bytes = 0;  // read ahead of loaders' readers (asked of the reader thread)
  uint64_t read_back_bytes = 0;   // read back into mappings found in use after pages behind their reader went
  uint64_t read_bytes = 0;        // of those, read by the reader thread so far (readahead(2) made, step by step)
  uint64_t reads_dropped = 0;     // reads replaced by a newer one of the same mapping before they were made
  uint64_t files_added = 0;       // created in a named directory after begin
  uint64_t files_replaced = 0;    // renamed over: followed to the new inode
  uint64_t passes = 0;            // evict passes made (ticks where something could have changed)
  uint64_t scans = 0;             // mapping scans used
  uint64_t full_scans = 0;        // of those, scans of every process (the others read the known mappers' maps only)
  // The follower's DONTNEEDs of a passed range (where pages stayed mapped: a drain of every CPU's LRU batch).
  uint64_t drains = 0;
  std::string last_error;
};

// The page-cache side of one window: call tick() at the cache interval.
class CacheKeeper {
 public:
  // Drops (CacheMode::drop) go through the actuator as triggers on behalf of owner ("window:w3").
  // Descriptors come from `fds` (shared by the agent's keepers); none: a cache of its own.
  CacheKeeper(HostPaths paths, Actuator& act, std::string owner, std::vector<fs::path> files,
              CacheKeeperOptions options, FdCache* fds = nullptr);
  ~CacheKeeper();
  CacheKeeper(const CacheKeeper&) = delete;
  CacheKeeper& operator=(const CacheKeeper&) = delete;
  // One tick with what the agent's keepers share (see KeeperHost).
  void tick(std::chrono::steady_clock::time_point now, KeeperHost& host);
  // One tick on its own (reads the host's counts and scans the mappings itself).
  void tick(std::chrono::steady_clock::time_point now);
  // A copy: the follower thread updates them.
  CacheKeeperStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    CacheKeeperStats s = stats_;
    s.read_bytes = reader_.bytes_read();
    s.reads_dropped = reader_.dropped();
    return s;
  }
  // No read asked of the reader thread is pending or under way (tests, the bench).
  bool reads_idle() const { return reader_.idle(); }
  const std::vector<fs::path>& files() const { return files_; }
  const std::vector<FileId>& ids() const { return ids_; }
  // Follow the names the user gave (issue 13 defect 8): every names_period, the directories of the
  // files (and these, the directories the user named, with every directory below) are stat'ed;
  // where one's mtime moved, its entries are read again: a file renamed over a window file (a new
  // inode) is followed by name, a regular file created in a named directory joins the window (up
  // to k_max_window_files). A poll of the directories' mtimes, not inotify: no watch descriptors
  // to bound, and its cost is one stat per directory per period.
  void follow_directories(const std::vector<fs::path>& dirs);

 private:
  void evict_pass(std::chrono::steady_clock::time_point now, const HostPageCounts* counts,
                  std::optional<std::chrono::steady_clock::time_point> deadline);
  void follow_names(std::chrono::steady_clock::time_point now);
  void add_file(const fs::path& p, const FileId& id);
  bool wants_scan(std::chrono::steady_clock::time_point now, const HostPageCounts* counts) const;
  void handle_mapped(std::chrono::steady_clock::time_point now, const ProcessMappings& all);
  struct VmaState;
  bool behind_reader(std::chrono::steady_clock::time_point now, pid_t pid, const FileMapping& m, int pagemap,
                     bool over_budget, VmaState& st, uint64_t& rss, bool& front_moved);
  // The follower thread (follow_period): started at the first mapping judged a loader.
  void follow_loop();
  size_t follow_pass(std::chrono::steady_clock::time_point now);  // mappings followed
  void follow_one(std::chrono::steady_clock::time_point now, pid_t pid, uint64_t start, VmaState& st);
  void read_back(pid_t pid, uint64_t start, VmaState& st);
  std::string map_files_path(pid_t pid, uint64_t start, uint64_t end) const;
  // Reads of the mapped file, asked of reader_: neither the tick (the agent's loop) nor the
  // follower waits on them.
  bool ask_read(pid_t pid, uint64_t start, const VmaState& st, uint64_t offset, uint64_t len);
  bool followed(const VmaState& st) const;
  void start_follower();
  int fd_of(size_t i);  // the file's descriptor from the FdCache; -1 (last_error set) when it cannot be opened
  HostPaths paths_;
  Actuator& act_;
  std::string owner_;
  std::vector<fs::path> files_;
  std::vector<FileId> ids_;
  FileIdSet id_set_;
  std::unique_ptr<FdCache> own_fds_;
  FdCache* fds_;
  std::vector<bool> mapped_now_;  // per file: some process maps it (last scan)
  std::vector<bool> hot_;         // per file: pages left cached at its last visit (visited every tick)
  size_t cursor_ = 0;             // round robin over files past files_per_tick (else where a cut pass resumes)
  size_t hot_cursor_ = 0;         // the same over the hot ones
  bool pass_cut_ = false;         // the last pass stopped at its time budget: the next tick goes on from the cursors
  CacheKeeperOptions opt_;
  CacheKeeperStats stats_;
  std::chrono::steady_clock::time_point last_mapped_{};
  std::chrono::steady_clock::time_point last_scan_{};
  std::chrono::steady_clock::time_point last_full_scan_{};
  bool scan_all_ = false;  // a file kept pages no known mapping explains: the next scan reads every process
  std::chrono::steady_clock::time_point last_pass_{};
  std::optional<HostPageCounts> pass_counts_;  // the host's counts at the last evict pass
  std::optional<uint64_t> scan_mapped_;        // the host's mapped count at the last scan
  struct DirState {
    struct timespec mtime {};
    bool named = false;  // under a directory the user named: new files join
  };
  std::map<fs::path, DirState> dirs_;
  std::unordered_map<std::string, size_t> by_path_;
  std::chrono::steady_clock::time_point last_names_{};
  bool active_ = false;      // a mapping grows or is being probed: scanned at every tick
  bool cached_left_ = true;  // some file page stayed cached after the last pass (mapped, dirty): scans may find it
  struct VmaState {
    FileId file{0, 0};  // what the mapping at this address maps
    uint64_t end = 0, offset = 0;
    uint64_t last_rss = 0;
    std::optional<std::chrono::steady_clock::time_point> probed;  // when the probe was made
    std::vector<std::pair<uint64_t, uint64_t>> samples;  // sample pages unmapped by the probe (empty: MADV_COLD probe)
    uint64_t rss_after_probe = 0;
    bool in_use = false;  // touched after the probe: left alone from then on
    bool moving = false;  // grew at the last scan
    // Behind the reader (see behind_reader):
    uint64_t last_front = 0;                                 // the end of the highest present region
    std::chrono::steady_clock::time_point front_at{};        // when it last moved
    uint64_t done_upto = 0;                                  // paged out below this address
    uint64_t behind_left = 0;                                // bytes still mapped below done_upto right after that
    std::vector<std::pair<uint64_t, uint64_t>> btr_samples;  // sample blocks out, not yet judged
    std::chrono::steady_clock::time_point btr_probed{};
    uint64_t btr_probe_front = 0;
    bool btr_loader = false;   // the samples stayed out while the front moved on
    bool follow_done = false;  // the follower paged out all of it
    uint64_t head_left = 0;    // bytes still mapped in the head (the first 4 blocks) once paged out
    uint64_t ahead_upto = 0;   // read ahead of the reader up to this address
    uint64_t retry_from = 0;   // mapped pages stayed from here at the last page-out: paged out again at the next
    uint64_t retry_left = 0;   // how many bytes stayed then (counted in behind_left)
    Fd pagemap, pidfd;         // the follower's, opened at its first pass
    Fd data;                   // the mapped file (map_files), for reads ahead and back
  };
  std::map<std::pair<pid_t, uint64_t>, VmaState> vmas_;
  std::set<pid_t> loader_pids_;  // processes with a mapping judged a loader: their new mappings start as one
  // vmas_, stats_ and loader_pids_ are shared with the follower thread.
  mutable std::mutex mu_;
  std::condition_variable follow_cv_;
  bool follow_stop_ = false;
  std::thread follower_;
  // The reads back and ahead, one pending per mapping: joined after the follower (which asks them).
  FileReader reader_;
};

}  // namespace spark::tune
