#include "tune/page_cache.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "core/fd.h"
#include "core/fs.h"
#include "tune/trigger.h"

namespace spark::tune {

const char* cache_mode_name(CacheMode m) {
  switch (m) {
    case CacheMode::off:
      return "off";
    case CacheMode::evict:
      return "evict";
    case CacheMode::drop:
      return "drop";
  }
  return "?";
}

Result<CacheMode> parse_cache_mode(const std::string& s) {
  if (s == "off") return CacheMode::off;
  if (s == "evict") return CacheMode::evict;
  if (s == "drop") return CacheMode::drop;
  return input_error("unknown cache mode '" + s + "': use evict, drop or off");
}

const char* mapped_policy_name(MappedPolicy p) {
  switch (p) {
    case MappedPolicy::idle:
      return "idle";
    case MappedPolicy::cold:
      return "cold";
    case MappedPolicy::pageout:
      return "pageout";
    case MappedPolicy::off:
      return "off";
  }
  return "?";
}

Result<MappedPolicy> parse_mapped_policy(const std::string& s) {
  if (s == "idle") return MappedPolicy::idle;
  if (s == "cold") return MappedPolicy::cold;
  if (s == "pageout") return MappedPolicy::pageout;
  if (s == "off") return MappedPolicy::off;
  return input_error("unknown mapped-page policy '" + s + "': use idle, cold, pageout or off");
}

Result<HostPageCounts> read_host_page_counts(const HostPaths& paths) {
  SPARK_TRY(std::string text, read_file(paths.proc / "vmstat"));
  HostPageCounts c;
  bool file = false, mapped = false;
  for (const auto& line : split_lines(text)) {
    if (line.rfind("nr_file_pages ", 0) == 0)
      c.file_pages = std::strtoull(line.c_str() + 14, nullptr, 10), file = true;
    else if (line.rfind("nr_mapped ", 0) == 0)
      c.mapped = std::strtoull(line.c_str() + 10, nullptr, 10), mapped = true;
    if (file && mapped) break;
  }
  if (!file || !mapped)
    return sys_error(EINVAL, (paths.proc / "vmstat").string() + " has no nr_file_pages or nr_mapped");
  return c;
}

const HostPageCounts* LazyPageCounts::get() {
  if (!read_) {
    read_ = true;
    if (auto c = read_host_page_counts(paths_)) counts_ = *c;
  }
  return counts_ ? &*counts_ : nullptr;
}

CacheKeeper::CacheKeeper(HostPaths paths, Actuator& act, std::string owner, std::vector<fs::path> files,
                         CacheKeeperOptions options, FdCache* fds)
    : paths_(std::move(paths)),
      act_(act),
      owner_(std::move(owner)),
      files_(std::move(files)),
      opt_(options),
      reader_(paths_) {
  if (!fds) {
    own_fds_ = std::make_unique<FdCache>(std::min<size_t>(k_keeper_fd_capacity, std::max<size_t>(files_.size(), 1)));
    fds = own_fds_.get();
  }
  fds_ = fds;
  for (const auto& f : files_) {
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0)
      ids_.push_back({st.st_dev, st.st_ino});
    else
      ids_.push_back({0, 0});
  }
  id_set_.insert(ids_.begin(), ids_.end());
  mapped_now_.assign(files_.size(), false);
  for (size_t i = 0; i < files_.size(); ++i) {
    by_path_[files_[i].string()] = i;
    dirs_[files_[i].parent_path()];
  }
  // Unknown at first: every file is visited at the first pass, or in the first round of slices.
  hot_.assign(files_.size(), files_.size() <= opt_.files_per_tick);
}

CacheKeeper::~CacheKeeper() {
  if (follower_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      follow_stop_ = true;
    }
    follow_cv_.notify_all();
    follower_.join();
  }
  fds_->drop_owner(this);
}

int CacheKeeper::fd_of(size_t i) {
  int fd = fds_->get(this, i, files_[i]);
  if (fd < 0) stats_.last_error = describe(errno_error("opening " + files_[i].string()));
  return fd;
}

namespace {

// A keeper on its own: the counts and the scan made for it alone.
class OwnHost : public KeeperHost {
 public:
  OwnHost(const HostPaths& paths, const FileIdSet& ids) : paths_(paths), ids_(ids), counts_(paths) {}
  const HostPageCounts* counts() override { return counts_.get(); }
  const ProcessMappings& mappings() override {
    if (!scan_) scan_ = scan_file_mappings(paths_, ids_);
    return *scan_;
  }

 private:
  const HostPaths& paths_;
  const FileIdSet& ids_;
  LazyPageCounts counts_;
  std::optional<ProcessMappings> scan_;
};

}  // namespace

void CacheKeeper::tick(std::chrono::steady_clock::time_point now) {
  OwnHost host(paths_, id_set_);
  tick(now, host);
}

void CacheKeeper::tick(std::chrono::steady_clock::time_point now, KeeperHost& host) {
  bool scan = false;
  const HostPageCounts* counts = nullptr;
  std::vector<pid_t> known;  // scan only these processes (empty: every process)
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.ticks;
    if (opt_.mode == CacheMode::drop) {
      if (auto r = drop_caches(act_, owner_, "cache drop tick"); !r)
        stats_.last_error = describe(r.error());
      else
        ++stats_.drops;
      return;
    }
    if (opt_.mode != CacheMode::evict) return;
    counts = host.counts();
    if (now - last_names_ >= opt_.names_period) {
      last_names_ = now;
      follow_names(now);
    }
    // Evict first: the mapping scan reads every process's maps and can take a while on a busy host.
    evict_pass(now, counts, host.deadline());
    // A mapping that grows or is probed is followed at every tick: the reaction window of paging out
    // behind a reader is a tick, not mapped_period (and the follower's period once it is a loader).
    if (opt_.mapped != MappedPolicy::off && (active_ || now - last_mapped_ >= opt_.mapped_period)) {
      last_mapped_ = now;
      scan = wants_scan(now, counts);
      // Between the scans of every process (mapped_period, or at once when a file keeps pages no
      // known mapping explains), a tick that follows active mappings reads only the maps of the
      // processes that map the files (measured, docs/benchmarks-load-window.md, eighth run: the scan
      // of ~100 processes' maps at every 50 ms tick was 0.5 s of the agent's CPU per 2 GiB load).
      if (scan && !scan_all_ && !vmas_.empty() && now - last_full_scan_ < opt_.mapped_period)
        for (const auto& [key, st] : vmas_) known.push_back(key.first);
    }
  }
  if (!scan) return;
  // The scan of every process's maps without the lock: the follower goes on meanwhile.
  ProcessMappings own;
  if (!known.empty()) {
    known.erase(std::unique(known.begin(), known.end()), known.end());  // vmas_ is ordered by pid
    const std::vector<std::pair<dev_t, ino_t>> ids(id_set_.begin(), id_set_.end());
    for (pid_t pid : known)
      if (auto m = find_file_mappings(paths_, pid, ids); m && !m->empty()) own[pid] = std::move(*m);
  }
  const ProcessMappings& all = known.empty() ? host.mappings() : own;
  bool follow = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.scans;
    last_scan_ = now;
    if (known.empty()) {
      ++stats_.full_scans;
      last_full_scan_ = now;
      scan_all_ = false;
    }
    if (counts) scan_mapped_ = counts->mapped;
    handle_mapped(now, all);
    for (const auto& [key, st] : vmas_) follow = follow || followed(st);
  }
  if (follow && opt_.follow_period.count() > 0) {
    if (!follower_.joinable()) start_follower();
    follow_cv_.notify_all();
  }
}

void CacheKeeper::follow_directories(const std::vector<fs::path>& dirs) {
  for (const auto& d : dirs) {
    dirs_[d].named = true;
    std::error_code ec;
    size_t n = 0;
    for (auto it = fs::recursive_directory_iterator(d, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator() && n < k_max_window_files; it.increment(ec), ++n)
      if (it->is_directory(ec)) dirs_[it->path()].named = true;
  }
  // The mtimes as they are now: what changes from here is followed.
  for (auto& [d, st] : dirs_) {
    struct stat s {};
    if (::stat(d.c_str(), &s) == 0) st.mtime = s.st_mtim;
  }
}

void CacheKeeper::add_file(const fs::path& p, const FileId& id) {
  by_path_[p.string()] = files_.size();
  files_.push_back(p);
  ids_.push_back(id);
  id_set_.insert(id);
  mapped_now_.push_back(false);
  hot_.push_back(true);
}

void CacheKeeper::follow_names(std::chrono::steady_clock::time_point) {
  std::vector<fs::path> new_dirs;
  for (auto& [d, st] : dirs_) {
    struct stat s {};
    if (::stat(d.c_str(), &s) != 0) continue;
    if (s.st_mtim.tv_sec == st.mtime.tv_sec && s.st_mtim.tv_nsec == st.mtime.tv_nsec) continue;
    st.mtime = s.st_mtim;
    std::error_code ec;
    std::vector<std::pair<fs::path, FileId>> unknown;
    for (auto it = fs::directory_iterator(d, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::directory_iterator(); it.increment(ec)) {
      const fs::path& p = it->path();
      struct stat fst {};
      if (::stat(p.c_str(), &fst) != 0) continue;
      if (S_ISDIR(fst.st_mode)) {
        if (st.named && !dirs_.count(p)) new_dirs.push_back(p);
        continue;
      }
      if (!S_ISREG(fst.st_mode)) continue;
      FileId id{fst.st_dev, fst.st_ino};
      auto known = by_path_.find(p.string());
      if (known == by_path_.end()) {
        unknown.push_back({p, id});
        continue;
      }
      size_t i = known->second;
      if (ids_[i] != id) {  // renamed over: the name now holds another inode
        id_set_.erase(ids_[i]);
        ids_[i] = id;
        id_set_.insert(id);
        fds_->drop(this, i);
        hot_[i] = true;
        mapped_now_[i] = false;
        ++stats_.files_replaced;
      }
    }
    // New names after every known one is updated: a new file may have the inode number a file
    // renamed over had.
    for (const auto& [p, id] : unknown)
      if (st.named && !id_set_.count(id) && files_.size() < k_max_window_files) {
        add_file(p, id);
        ++stats_.files_added;
      }
  }
  for (const auto& d : new_dirs) {
    dirs_[d].named = true;  // mtime zero: read at the next period
  }
}

// Idle cost (issue 13 defect 11): a file's cached pages can only have grown if the host's page
// cache moved, so while nr_file_pages stands still and no file kept pages at its last visit, the
// pass is skipped (rechecked every idle_recheck all the same). A visit is one cachestat(2) of the
// file; DONTNEED only where pages are cached.
void CacheKeeper::evict_pass(std::chrono::steady_clock::time_point now, const HostPageCounts* counts,
                             std::optional<std::chrono::steady_clock::time_point> deadline) {
  bool any_hot = std::find(hot_.begin(), hot_.end(), true) != hot_.end();
  bool moved = !counts || !pass_counts_ || counts->file_pages != pass_counts_->file_pages;
  if (!pass_cut_ && !any_hot && !moved && now - last_pass_ < opt_.idle_recheck) return;
  ++stats_.passes;
  last_pass_ = now;
  // A pass cut short keeps the counts of its start: what its first slices saw may have grown since.
  if (counts && !pass_cut_) pass_counts_ = *counts;
  const size_t n = files_.size();
  // The time budget (pass_budget, the host's deadline): checked before each visit but the first;
  // where it runs out, the cursors stay on the first file not visited.
  auto clock = [this] { return opt_.clock ? opt_.clock() : std::chrono::steady_clock::now(); };
  std::optional<std::chrono::steady_clock::time_point> stop_at = deadline;
  if (opt_.pass_budget.count() > 0) {
    auto own = clock() + opt_.pass_budget;
    stop_at = stop_at ? std::min(*stop_at, own) : own;
  }
  size_t visited = 0;
  auto spent = [&] { return stop_at && visited > 0 && clock() >= *stop_at; };
  bool left = false;
  auto visit = [&](size_t i) {
    ++visited;
    const auto& f = files_[i];
    if (mapped_now_[i]) {  // its mapped pages are the mapping pass's: kept visited
      hot_[i] = true;
      left = true;
      return;
    }
    int fd = fd_of(i);
    if (fd < 0) {
      hot_[i] = false;
      return;
    }
    std::optional<uint64_t> before;
    if (auto b = cached_pages_of(fd, f); b && *b) before = **b;
    if (before && *before == 0) {
      hot_[i] = false;
      return;
    }
    if (int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); rc != 0) {
      stats_.last_error = describe(sys_error(rc, "fadvise DONTNEED " + f.string()));
      fds_->drop(this, i);
      hot_[i] = false;
      return;
    }
    ++stats_.evictions;
    uint64_t after = 1;  // unknown without cachestat: assume pages stayed
    if (auto a = cached_pages_of(fd, f); a && *a) after = **a;
    hot_[i] = after > 0;
    left = left || after > 0;
    // Pages DONTNEED could not drop in a file no process was seen mapping: most often a process
    // that mapped it since the last scan (a loader starting). Scan now, not at mapped_period: by
    // then a 400 MB/s reader is 100 MiB in.
    if (after > 0 && opt_.mapped != MappedPolicy::off) active_ = scan_all_ = true;
  };
  bool cut = false;
  // Visits file i unless the budget is spent (then the pass is cut, i not visited).
  auto try_visit = [&](size_t i) {
    cut = spent();
    if (!cut) visit(i);
    return !cut;
  };
  if (n <= opt_.files_per_tick) {
    // Every file; a pass cut short goes on from cursor_ at the next tick.
    size_t i = pass_cut_ ? std::min(cursor_, n) : 0;
    while (i < n && try_visit(i)) ++i;
    cursor_ = cut ? i : 0;
  } else {
    // Files found cached (up to a slice of them, in turn), then the next slice of the others: which
    // is which as the pass began (a hot file evicted now is not visited twice).
    const std::vector<bool> was_hot = hot_;
    size_t hot_visits = 0;
    for (size_t k = 0; k < n && hot_visits < opt_.files_per_tick; ++k, hot_cursor_ = (hot_cursor_ + 1) % n)
      if (was_hot[hot_cursor_]) {
        if (!try_visit(hot_cursor_)) break;
        ++hot_visits;
      }
    for (size_t k = 0; !cut && k < opt_.files_per_tick; ++k, cursor_ = (cursor_ + 1) % n)
      if (!was_hot[cursor_] && !try_visit(cursor_)) break;
  }
  pass_cut_ = cut;
  // A sliced or cut pass saw only part of the files: what the others hold is unknown.
  cached_left_ = left || n > opt_.files_per_tick || cut;
}

bool CacheKeeper::wants_scan(std::chrono::steady_clock::time_point now, const HostPageCounts* counts) const {
  // No page of the files cached after the pass: none can be mapped.
  if (!cached_left_ && vmas_.empty()) return false;
  for (const auto& [key, st] : vmas_)
    if (!st.in_use && (st.last_rss > 0 || st.probed)) return true;  // growing or probed: followed every period
  if (!counts || !scan_mapped_ || counts->mapped != *scan_mapped_) return true;
  return now - last_scan_ >= opt_.idle_recheck;
}

void CacheKeeper::handle_mapped(std::chrono::steady_clock::time_point now, const ProcessMappings& all) {
  if (ids_.empty()) return;
  std::set<std::pair<pid_t, uint64_t>> live;
  std::vector<bool> mapped(files_.size(), false);
  const bool over_budget = opt_.mapped_budget == 0 || stats_.mapped_bytes > opt_.mapped_budget;
  uint64_t mapped_total = 0;
  for (const auto& entry : all) {
    const pid_t pid = entry.first;  // a plain name: lambdas below capture it (clang 14 refuses a binding)
    const auto& every = entry.second;
    std::vector<FileMapping> mine;
    for (const auto& m : every)
      if (id_set_.count({m.dev, m.ino})) mine.push_back(m);
    if (mine.empty()) continue;
    const auto* maps = &mine;
    const std::string name = std::to_string(pid);
    std::vector<std::pair<uint64_t, uint64_t>> cold, pageout;
    std::set<size_t> pageout_files;
    // Growth is followed with PAGEMAP_SCAN (present entries of the mapping's range); smaps, which
    // costs a page-table walk with per-page accounting of every VMA, is read only when a probed
    // mapping's Referenced is due, or on kernels without PAGEMAP_SCAN.
    std::optional<std::map<uint64_t, VmaUsage>> usage;  // read at most once per process and scan
    auto smaps_of = [&]() -> const std::map<uint64_t, VmaUsage>* {
      if (!usage) {
        auto u = vma_usages(paths_, pid);
        if (!u) return nullptr;  // the process is gone
        usage = std::move(*u);
      }
      return &*usage;
    };
    Fd pagemap(::open((paths_.proc / name / "pagemap").c_str(), O_RDONLY | O_CLOEXEC));
    for (const auto& m : *maps) {
      size_t file_index = 0;
      for (size_t i = 0; i < ids_.size(); ++i)
        if (ids_[i] == std::make_pair(m.dev, m.ino)) mapped[i] = true, file_index = i;
      auto key = std::make_pair(pid, m.start);
      live.insert(key);
      auto& st = vmas_[key];
      // A new mapping at the address of one unmapped since the last scan (a loader that maps shard
      // after shard gets the same address each time): a new state, not the old one's.
      if (st.file != FileId{m.dev, m.ino} || st.end != m.end || st.offset != m.offset) {
        st = VmaState{};
        st.file = {m.dev, m.ino};
        st.end = m.end;
        st.offset = m.offset;
      }
      // A process that showed itself a loader in one mapping (shard after shard, or every shard
      // mapped up front): its other mappings are paged out behind their reader from the start,
      // without samples of their own. Pages mapped again below what was paged out still mean use
      // in place (behind_reader).
      if (over_budget && !st.btr_loader && !st.in_use && !st.probed && st.btr_samples.empty() &&
          loader_pids_.count(pid))
        st.btr_loader = true;
      // The two outcomes of a probe: the process uses the mapping, or it is done with it.
      auto keep_in_use = [&] {
        st.in_use = true;
        ++stats_.kept_in_use;
      };
      auto page_out = [&] {
        pageout.push_back({m.start, m.end});
        pageout_files.insert(file_index);
        st.probed.reset();
        st.samples.clear();
        st.last_rss = 0;
      };
      if (st.in_use) {  // counted as last measured: not walked again
        mapped_total += st.last_rss;
        continue;
      }
      std::optional<uint64_t> present;
      if (pagemap.get() >= 0)
        if (auto b = mapped_bytes(pagemap.get(), m.start, m.end); b && *b) present = **b;
      if (!present) {
        const auto* all = smaps_of();
        if (!all) break;
        auto u = all->find(m.start);
        if (u == all->end()) continue;
        present = u->second.rss;
      }
      uint64_t rss = *present;
      bool front_moved = false;
      if (behind_reader(now, pid, m, pagemap.get(), over_budget, st, rss, front_moved)) {
        keep_in_use();
        read_back(pid, m.start, st);
        mapped_total += st.last_rss;
        continue;
      }
      mapped_total += rss;
      if (st.btr_loader) {
        // Its samples showed a loader. Once its reader stopped (at the end of a shard, or paused)
        // the rest goes, without the probe of a mapping that stopped growing: that probe's samples
        // would lie ahead of a paused reader, and its resuming would read as use in place.
        if (!front_moved && rss > 0 && now - st.front_at >= 2 * opt_.behind_wait) page_out();
        st.last_rss = rss;
        continue;
      }
      if (st.probed && !st.samples.empty()) {
        // A sampled probe is out. Samples mapped again with little else mapped since: the process
        // reads the mapping in place (in use). Much more mapped since: it is loading again.
        uint64_t sample_bytes = 0, back = 0;
        for (const auto& r : st.samples) {
          sample_bytes += r.second - r.first;
          if (auto b = mapped_bytes(pagemap.get(), r.first, r.second); b && *b) back += **b;
        }
        uint64_t grown = rss > st.rss_after_probe ? rss - st.rss_after_probe : 0;
        if (back > 0 && grown <= 2 * sample_bytes) {
          keep_in_use();
          continue;
        }
        if (grown > 2 * sample_bytes) {
          st.probed.reset();
          st.samples.clear();
          st.last_rss = rss;
          continue;
        }
        if (now - *st.probed < opt_.idle_after) continue;
        page_out();
        continue;
      }
      bool growing = rss > st.last_rss || front_moved;
      st.moving = growing;
      st.last_rss = rss;
      if (rss == 0 || growing) {
        st.probed.reset();
        continue;
      }
      if (!over_budget && !st.probed) continue;  // within the budget: nothing started
      if (opt_.mapped == MappedPolicy::pageout) {
        pageout.push_back({m.start, m.end});
        pageout_files.insert(file_index);
        continue;
      }
      if (!st.probed) {
        st.probed = now;
        st.samples.clear();
        if (opt_.mapped == MappedPolicy::cold) {
          cold.push_back({m.start, m.end});
          continue;
        }
        // The sampled probe: a few file-aligned blocks out of the mapping now, in this process.
        std::vector<std::pair<uint64_t, uint64_t>> samples;
        const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        // Samples where the process has read: below the front (a paused reader's unread part would
        // come back as it resumes, which is not use in place).
        const uint64_t top = st.last_front > m.start ? std::min(st.last_front, m.end) : m.end;
        const uint64_t block = std::max(opt_.sample_block, page), len = top - m.start;
        const size_t count = std::clamp<size_t>(static_cast<size_t>(len / std::max<uint64_t>(opt_.sample_every, 1)),
                                                opt_.min_samples, opt_.max_samples);
        for (size_t k = 0; k < count; ++k) {
          uint64_t want = m.offset + len * (2 * k + 1) / (2 * count);  // the middle of the k-th part
          uint64_t file_at = want / block * block;
          if (file_at < m.offset) continue;
          uint64_t at = m.start + (file_at - m.offset);
          if (at + block > top) continue;
          if (samples.empty() || samples.back().first != at) samples.push_back({at, at + block});
        }
        if (samples.empty())  // a mapping smaller than a block: one page in its middle
          samples.push_back({(m.start + len / 2) / page * page, (m.start + len / 2) / page * page + page});
        if (pagemap.get() >= 0 && !samples.empty() && advise_process(pid, samples, MADV_PAGEOUT)) {
          ++stats_.probes;
          for (const auto& r : samples)
            if (auto b = mapped_bytes(pagemap.get(), r.first, r.second); b && *b && **b == 0) st.samples.push_back(r);
          uint64_t out = 0;
          for (const auto& r : st.samples) out += r.second - r.first;
          st.rss_after_probe = rss - std::min<uint64_t>(rss, out);
        }
        if (st.samples.empty()) cold.push_back({m.start, m.end});  // nothing left the mapping: probe by MADV_COLD
        continue;
      }
      // The MADV_COLD probe: smaps' Referenced after idle_after.
      if (opt_.mapped == MappedPolicy::cold || now - *st.probed < opt_.idle_after) continue;
      const auto* all = smaps_of();
      if (!all) break;
      auto u = all->find(m.start);
      if (u == all->end()) continue;
      if (u->second.referenced > 0)
        keep_in_use();
      else
        page_out();
    }
    // MADV_PAGEOUT skips folios that are not on an LRU list yet: the last ones the process faulted
    // in can wait in another CPU's LRU batch (measured: half of a 64 MiB mapping of large folios
    // stayed). fadvise(DONTNEED) over the file drains every CPU's batch (lru_add_drain_all) when it
    // cannot drop everything, as with mapped pages; it only deactivates the mapped ones.
    for (size_t i : pageout_files)
      if (int fd = fd_of(i); fd >= 0) (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (auto r = advise_process(pid, cold, MADV_COLD); !r)
      stats_.last_error = describe(r.error());
    else
      stats_.cold_advices += cold.size();
    if (auto r = advise_process(pid, pageout, MADV_PAGEOUT); !r)
      stats_.last_error = describe(r.error());
    else
      stats_.pageouts += pageout.size();
  }
  for (auto it = vmas_.begin(); it != vmas_.end();) it = live.count(it->first) ? std::next(it) : vmas_.erase(it);
  for (size_t i = 0; i < mapped.size(); ++i)
    if (mapped_now_[i] && !mapped[i]) hot_[i] = true;  // unmapped since: evicted at the next pass
  active_ = false;
  for (const auto& [key, st] : vmas_)
    if (!st.in_use && (st.moving || st.probed || !st.btr_samples.empty())) active_ = true;
  mapped_now_ = mapped;
  stats_.mapped_bytes = mapped_total;
}

// Page out behind the reader (issue 14 part 1). A mapping that keeps growing (one GGUF mapped
// whole, every shard mapped up front) is followed by where its reader is: the end of the highest
// present region (the front). Once the front is past behind_lag + a few blocks, sample blocks in
// the region it has passed are paged out; behind_wait later, none mapped again while the front
// moved on means a loader: from then on, at every scan, the region more than behind_lag behind
// the front is paged out in file-aligned blocks (large folios stay whole). A sample mapped again,
// or pages mapped again below what was paged out, means the process uses its mapping in place (a
// CPU server): it is kept, and never paged out again in this window. Returns true for that.
bool CacheKeeper::behind_reader(std::chrono::steady_clock::time_point now, pid_t pid, const FileMapping& m, int pagemap,
                                bool over_budget, VmaState& st, uint64_t& rss, bool& front_moved) {
  if (opt_.mapped != MappedPolicy::idle || opt_.behind_lag == 0 || pagemap < 0) return false;
  if (!over_budget && st.done_upto == 0 && st.btr_samples.empty()) return false;
  auto regions = present_regions(pagemap, m.start, m.end);
  if (!regions || !*regions) return false;
  const auto& present = **regions;
  uint64_t front = present.empty() ? m.start : present.back().second;
  front_moved = front > st.last_front;
  if (front_moved || st.last_front == 0) st.front_at = now;
  st.last_front = std::max(st.last_front, front);
  auto bytes_in = [&](uint64_t a, uint64_t b) {
    uint64_t n = 0;
    for (const auto& [s, e] : present)
      if (e > a && s < b) n += std::min(e, b) - std::max(s, a);
    return n;
  };
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t block = std::max(opt_.sample_block, page);
  // Pages mapped again below what was paged out: read in place.
  if (st.done_upto > m.start && bytes_in(m.start, st.done_upto) > st.behind_left + block) {
    st.last_rss = rss;
    return true;
  }
  if (!st.btr_samples.empty()) {
    for (const auto& [a, b] : st.btr_samples)
      if (bytes_in(a, b) > 0) {
        st.btr_samples.clear();
        st.last_rss = rss;
        return true;
      }
    if (now - st.btr_probed >= opt_.behind_wait && front > st.btr_probe_front) {
      st.btr_loader = true;
      st.btr_samples.clear();
      loader_pids_.insert(pid);
    }
  }
  // The passed region ends behind_lag behind the front, on a block boundary of the file.
  auto align_down = [&](uint64_t addr) -> uint64_t {
    if (addr <= m.start) return m.start;
    uint64_t file_at = (addr - m.start + m.offset) / block * block;
    return file_at <= m.offset ? m.start : m.start + (file_at - m.offset);
  };
  uint64_t passed = align_down(front > m.start + opt_.behind_lag ? front - opt_.behind_lag : m.start);
  uint64_t from = std::max(st.done_upto, m.start);
  if (!follower_.joinable() && !st.btr_loader && st.btr_samples.empty() && passed >= from + 4 * block) {
    std::vector<std::pair<uint64_t, uint64_t>> samples;
    for (int k = 0; k < 4; ++k) {
      uint64_t at = align_down(from + (passed - from) * static_cast<uint64_t>(2 * k + 1) / 8);
      if (at < from || at + block > passed) continue;
      if (samples.empty() || samples.back().first != at) samples.push_back({at, at + block});
    }
    if (!samples.empty() && advise_process(pid, samples, MADV_PAGEOUT)) {
      ++stats_.probes;
      for (const auto& r : samples)
        if (auto b = mapped_bytes(pagemap, r.first, r.second); b && *b && **b == 0) st.btr_samples.push_back(r);
      st.btr_probed = now;
      st.btr_probe_front = front;
    }
  }
  // With the follower thread running, the page-out behind a loader is its work.
  if (st.btr_loader && !follower_.joinable() && passed >= from + block) {
    if (auto r = advise_process(pid, {{from, passed}}, MADV_PAGEOUT); !r) {
      stats_.last_error = describe(r.error());
      return false;
    }
    ++stats_.behind_pageouts;
    stats_.behind_bytes += passed - from;
    st.done_upto = passed;
    if (auto left = mapped_bytes(pagemap, m.start, st.done_upto); left && *left) st.behind_left = **left;
    if (auto now_rss = mapped_bytes(pagemap, m.start, m.end); now_rss && *now_rss) rss = **now_rss;
    st.last_rss = std::min(st.last_rss, rss);
  }
  return false;
}

// Followed by the thread: a loader's mapping, one whose samples are out (judged at the thread's
// period, not at the next tick), and one that grows (its samples taken as soon as it is far enough in).
bool CacheKeeper::followed(const VmaState& st) const {
  if (opt_.mapped != MappedPolicy::idle || opt_.behind_lag == 0 || st.in_use || st.follow_done) return false;
  if (st.btr_loader || !st.btr_samples.empty()) return true;
  const bool over_budget = opt_.mapped_budget == 0 || stats_.mapped_bytes > opt_.mapped_budget;
  return over_budget && st.moving && !st.probed && st.last_rss > 0;
}

void CacheKeeper::start_follower() {
  follower_ = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), "spark-follow");  // seen apart in top, perf and the bench's --detail
    follow_loop();
  });
}

void CacheKeeper::follow_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!follow_stop_) {
    bool any = false;
    for (const auto& [key, st] : vmas_) any = any || followed(st);
    if (!any) {
      follow_cv_.wait(lock);  // the tick notifies when a loader is found
      continue;
    }
    lock.unlock();
    follow_pass(std::chrono::steady_clock::now());
    lock.lock();
    follow_cv_.wait_for(lock, opt_.follow_period, [this] { return follow_stop_; });
  }
}

size_t CacheKeeper::follow_pass(std::chrono::steady_clock::time_point now) {
  size_t n = 0;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, st] : vmas_)
    if (followed(st)) {
      ++n;
      follow_one(now, key.first, key.second, st);
    }
  if (n) ++stats_.follow_passes;
  return n;
}

// A mapping found in use in place after part of it was paged out behind its reader (a CPU server
// whose first pass looked like a load): what was paged out is read back at once, by the reader
// thread from its start to what was paged out, so the server's next pass faults on cached pages
// instead of reading its weights back fault by fault. (One readahead(2) of it all read 8 MiB of
// 448 on the dev VM: see tune/file_reads.h.)
void CacheKeeper::read_back(pid_t pid, uint64_t start, VmaState& st) {
  if (st.done_upto <= start) return;
  if (!st.data.valid()) st.data = Fd(::open(map_files_path(pid, start, st.end).c_str(), O_RDONLY | O_CLOEXEC));
  if (ask_read(pid, start, st, st.offset, st.done_upto - start)) stats_.read_back_bytes += st.done_upto - start;
}

// <proc>/PID/map_files/START-END: the file the mapping at [start, end) maps, as the process sees it.
std::string CacheKeeper::map_files_path(pid_t pid, uint64_t start, uint64_t end) const {
  char range[64];
  std::snprintf(range, sizeof range, "/map_files/%llx-%llx", static_cast<unsigned long long>(start),
                static_cast<unsigned long long>(end));
  return (paths_.proc / std::to_string(pid)).string() + range;
}

// A read of the mapped file asked of the reader thread, through a duplicate of st.data (the
// mapping's state may go before the read is made); false when there is no file to read. One read
// pending per mapping: a newer one replaces it (the loader's front moved on).
bool CacheKeeper::ask_read(pid_t pid, uint64_t start, const VmaState& st, uint64_t offset, uint64_t len) {
  if (!st.data.valid()) return false;
  Fd dup(::fcntl(st.data.get(), F_DUPFD_CLOEXEC, 0));
  if (!dup.valid()) return false;
  reader_.ask({pid, start}, std::move(dup), offset, len);
  return true;
}

// One mapping of a loader, between two ticks: where its front is now (present pages from what was
// paged out to the end: the walk is the lag and the read-around, not the whole mapping), and
// MADV_PAGEOUT of what lies more than behind_lag behind it, once follow_chunk of it is due. The
// whole mapping read (its front at the end, still for half of behind_wait): the rest goes too.
// Whether the process uses the mapping in place is the tick's (pages mapped again below
// done_upto, behind_reader); the follower only checks that the address still maps the same file.
void CacheKeeper::follow_one(std::chrono::steady_clock::time_point now, pid_t pid, uint64_t start, VmaState& st) {
  const std::string dir = (paths_.proc / std::to_string(pid)).string();
  if (st.pidfd.get() < 0) {
    st.pidfd = Fd(open_pidfd_of(pid));
    if (st.pidfd.get() < 0) {
      st.follow_done = true;  // gone
      return;
    }
  }
  if (st.pagemap.get() < 0) {
    st.pagemap = Fd(::open((dir + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
    if (st.pagemap.get() < 0) {
      st.follow_done = true;
      return;
    }
  }
  const std::string mapped_file = map_files_path(pid, start, st.end);
  struct stat s {};
  if (::stat(mapped_file.c_str(), &s) != 0 || FileId{s.st_dev, s.st_ino} != st.file) {
    active_ = true;  // unmapped, or another mapping at its address (shard after shard): the next tick scans
    return;
  }
  if (!st.data.valid()) st.data = Fd(::open(mapped_file.c_str(), O_RDONLY | O_CLOEXEC));  // none: no reads ahead
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t block = std::max(opt_.sample_block, page);
  // The head of the mapping (its first 4 blocks) mapped again once paged out: the process went
  // back to the start, as a CPU server's next pass does right after its first (the load). Seen
  // here, at the thread's period, before the rest is paged out at the end of that first pass; a
  // loader that reads its header again maps one folio of it, not more than a block.
  const uint64_t head_end = start + 4 * block;
  if (st.done_upto >= head_end && head_end <= st.end)
    if (auto b = mapped_bytes(st.pagemap.get(), start, head_end); b && *b && **b > st.head_left + block) {
      st.in_use = true;
      st.btr_samples.clear();
      ++stats_.kept_in_use;
      read_back(pid, start, st);
      return;
    }
  const uint64_t from = std::max(st.done_upto, start);
  if (from >= st.end) {
    st.follow_done = true;
    return;
  }
  auto regions = present_regions(st.pagemap.get(), from, st.end);
  if (!regions || !*regions) return;
  const auto& present = **regions;
  uint64_t front = present.empty() ? st.last_front : std::max(st.last_front, present.back().second);
  if (front > st.last_front) {
    st.last_front = front;
    st.front_at = now;
  }
  auto align_down = [&](uint64_t addr) -> uint64_t {
    if (addr <= start) return start;
    uint64_t file_at = (addr - start + st.offset) / block * block;
    return file_at <= st.offset ? start : start + (file_at - st.offset);
  };
  const bool read_whole = front >= st.end && now - st.front_at >= opt_.behind_wait / 2;
  const uint64_t passed =
      read_whole ? st.end : align_down(front > start + opt_.behind_lag ? front - opt_.behind_lag : start);
  if (!st.btr_loader) {
    // Not judged yet: the samples of behind_reader, taken and judged here.
    if (st.btr_samples.empty()) {
      if (read_whole || passed < from + 4 * block) return;
      std::vector<std::pair<uint64_t, uint64_t>> samples;
      for (int k = 0; k < 4; ++k) {
        uint64_t at = align_down(from + (passed - from) * static_cast<uint64_t>(2 * k + 1) / 8);
        if (at < from || at + block > passed) continue;
        if (samples.empty() || samples.back().first != at) samples.push_back({at, at + block});
      }
      if (samples.empty() || !advise_pidfd(st.pidfd.get(), pid, samples, MADV_PAGEOUT)) return;
      ++stats_.probes;
      for (const auto& r : samples)
        if (auto b = mapped_bytes(st.pagemap.get(), r.first, r.second); b && *b && **b == 0)
          st.btr_samples.push_back(r);
      st.btr_probed = now;
      st.btr_probe_front = front;
      return;
    }
    for (const auto& [a, b] : st.btr_samples)
      if (auto back = mapped_bytes(st.pagemap.get(), a, b); back && *back && **back > 0) {
        st.btr_samples.clear();  // mapped again: read in place
        st.in_use = true;
        ++stats_.kept_in_use;
        return;
      }
    if (now - st.btr_probed < opt_.behind_wait || front <= st.btr_probe_front) return;
    st.btr_loader = true;
    st.btr_samples.clear();
    loader_pids_.insert(pid);
  }
  // A loader: read_ahead of the file in front of its reader, asked half of it at a time.
  if (opt_.read_ahead > 0 && st.data.valid() && !read_whole && front > start && front < st.end) {
    const uint64_t want = std::min(st.end, front + opt_.read_ahead), at = std::max(st.ahead_upto, front);
    if (want > at && (want - at >= opt_.read_ahead / 2 || want == st.end)) {
      if (ask_read(pid, start, st, st.offset + (at - start), want - at)) stats_.read_ahead_bytes += want - at;
      st.ahead_upto = want;
    }
  }
  if (passed <= from || (!read_whole && passed < from + std::max(opt_.follow_chunk, block))) return;
  // Pages that stayed mapped at the last page-out are in its range again (lo): by now the CPU
  // batches that held them have moved them to an LRU list.
  const uint64_t lo = st.retry_from > start ? std::min(st.retry_from, from) : from;
  if (auto r = advise_pidfd(st.pidfd.get(), pid, {{lo, passed}}, MADV_PAGEOUT); !r) {
    stats_.last_error = describe(r.error());
    st.follow_done = true;  // the tick decides again
    return;
  }
  ++stats_.behind_pageouts;
  stats_.behind_bytes += passed - from;
  // What stayed mapped below done_upto (folios shared with another process, or not on an LRU list
  // yet): the tick's measure of pages mapped again starts from it.
  uint64_t stayed = 0;
  if (auto b = mapped_bytes(st.pagemap.get(), lo, passed); b && *b) stayed = **b;
  // Folios the reader faulted in last can wait in its CPU's LRU batch, where MADV_PAGEOUT skips
  // them (measured: 9 MiB left at the end of a 512 MiB mapping, 1 run in 20, and with the ticks
  // stopped nothing pages them out later). In the stream they are in the range of the next
  // page-out, by when their CPU's batch has gone to the LRU. Where pages stay twice, and once at
  // the end of the mapping: DONTNEED over the passed part of the file, which drops what
  // MADV_PAGEOUT cannot reach (pages read around the reader's faults that it never mapped, a region
  // it skipped) and, as it cannot drop mapped pages, drains every CPU's batch
  // (lru_add_drain_all); then what stayed is paged out again. A DONTNEED at every page-out was a
  // fifth of the follower thread's CPU (perf, eighth run).
  const bool retried = lo < from;
  if (!st.data.valid()) {
    st.retry_from = 0;  // no file to drain with: what stayed is left, as before
  } else if (read_whole || (retried && stayed > 0)) {
    const uint64_t a = read_whole ? start : lo;
    (void)::posix_fadvise(st.data.get(), static_cast<off_t>(st.offset + (a - start)), static_cast<off_t>(passed - a),
                          POSIX_FADV_DONTNEED);
    ++stats_.drains;
    if (stayed > 0) {
      if (advise_pidfd(st.pidfd.get(), pid, {{lo, passed}}, MADV_PAGEOUT))
        if (auto b = mapped_bytes(st.pagemap.get(), lo, passed); b && *b) stayed = **b;
    }
    st.retry_from = 0;
  } else {
    st.retry_from = stayed > 0 ? lo : 0;
  }
  // behind_left: bytes still mapped below done_upto; what stayed in [lo, from) was counted before.
  st.behind_left = st.behind_left - std::min(st.behind_left, st.retry_left) + stayed;
  st.retry_left = st.retry_from ? stayed : 0;
  if (st.done_upto < head_end && passed >= head_end)
    if (auto b = mapped_bytes(st.pagemap.get(), start, head_end); b && *b) st.head_left = **b;
  st.done_upto = passed;
  if (passed >= st.end) st.follow_done = true;
}

}  // namespace spark::tune
