#include "window/floor.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <sstream>

#include "core/fs.h"
#include "core/log.h"
#include "core/proc_stat.h"
#include "core/process.h"
#include "core/units.h"
#include "state/journal.h"
#include "telemetry/reclaim_wake.h"
#include "tune/page_cache.h"
#include "tune/trigger.h"

using spark::state::Target, spark::state::TargetKind, spark::state::read_journal, spark::state::sysctl_target;

using spark::tune::Change, spark::tune::Trigger, spark::tune::Tuner, spark::tune::advise_process,
    spark::tune::compact_memory, spark::tune::evict_file, spark::tune::find_file_mappings, spark::tune::fire;

using spark::telemetry::PsiKind, spark::telemetry::PsiTrigger, spark::telemetry::ReclaimWake;

namespace spark::window {

using json = nlohmann::json;

Result<uint64_t> parse_floor(const std::string& text, uint64_t mem_total, const std::string& what) {
  std::string t = trim(text);
  if (t == "off" || t == "0") return uint64_t{0};
  if (!t.empty() && t[0] == '-')
    return input_error(what + " " + text + ": a floor cannot be below zero; give a size (8G) or a share of RAM (5%)");
  uint64_t bytes = 0;
  if (auto p = parse_percentage(t); p && t.find('%') != std::string::npos) {
    if (!p->base.empty() && p->base != "ram")
      return input_error(what + " " + text + ": a floor is a share of RAM (5% or 5% of ram)");
    if (!(p->percent > 0) || p->percent >= 100)
      return input_error(what + " " + text + ": the share must be above 0% and below 100% of RAM");
    bytes = static_cast<uint64_t>(static_cast<double>(mem_total) * p->percent / 100.0);
  } else {
    auto s = parse_size(t);
    if (!s)
      return input_error(what + " " + text + ": " + describe(s.error()) + "; give a size (8G) or a share of RAM (5%)");
    bytes = *s;
  }
  if (mem_total && bytes >= mem_total)
    return input_error(what + " " + text + " (" + format_size(bytes) + ") is not below this host's RAM (" +
                       format_size(mem_total) + "); give a smaller floor");
  return bytes;
}

json floor_to_json(const FloorSpec& s) {
  return {
      {"free_bytes", s.free_bytes},          {"available_bytes", s.available_bytes},    {"hysteresis", s.hysteresis},
      {"period_ms", s.period.count()},       {"fast_period_us", s.fast_period.count()}, {"grace_ms", s.grace.count()},
      {"max_pause_ms", s.max_pause.count()}, {"kill_grace_ms", s.kill_grace.count()},   {"on_floor", s.on_floor}};
}

Result<FloorSpec> floor_from_json(const json& j) {
  if (!j.is_object()) return input_error("floor: expected an object");
  FloorSpec s;
  try {
    s.free_bytes = j.value("free_bytes", uint64_t{0});
    s.available_bytes = j.value("available_bytes", uint64_t{0});
    s.hysteresis = j.value("hysteresis", uint64_t{0});
    s.period = std::chrono::milliseconds(j.value("period_ms", int64_t{k_floor_period.count()}));
    s.fast_period = std::chrono::microseconds(j.value("fast_period_us", int64_t{k_floor_fast_period.count()}));
    s.grace = std::chrono::milliseconds(j.value("grace_ms", int64_t{k_floor_grace.count()}));
    s.max_pause = std::chrono::milliseconds(j.value("max_pause_ms", int64_t{k_floor_max_pause.count()}));
    s.kill_grace = std::chrono::milliseconds(j.value("kill_grace_ms", int64_t{k_floor_kill_grace.count()}));
    s.on_floor = j.value("on_floor", std::vector<std::string>{});
  } catch (const std::exception& e) {
    return input_error(std::string("floor: ") + e.what());
  }
  if (s.period.count() <= 0 || s.fast_period.count() <= 0 || s.grace.count() < 0 || s.max_pause.count() <= 0 ||
      s.kill_grace.count() < 0)
    return input_error("floor: periods and graces must be positive");
  return s;
}

Result<FloorSpec> resolve_floor(const FloorAsk& ask, const MemInfo& mem) {
  FloorSpec s;
  if (!ask.free.empty()) {
    SPARK_TRY(s.free_bytes, parse_floor(ask.free, mem.total(), "--free-floor"));
  }
  if (!ask.available.empty()) {
    SPARK_TRY(s.available_bytes, parse_floor(ask.available, mem.total(), "--available-floor"));
  }
  s.on_floor = ask.on_floor;
  if (!s.on_floor.empty() && !s.enabled())
    return input_error("--on-floor needs a floor: give --free-floor or --available-floor");
  s.hysteresis = std::max<uint64_t>(std::max(s.free_bytes, s.available_bytes) / 4, 64ULL << 20);
  if (!ask.force) {
    std::string crossed;
    if (s.free_bytes && mem.free() < s.free_bytes)
      crossed = "free memory is " + format_size(mem.free()) + ", below the free floor of " + format_size(s.free_bytes);
    else if (s.available_bytes && mem.available() < s.available_bytes)
      crossed = "MemAvailable is " + format_size(mem.available()) + ", below the available floor of " +
                format_size(s.available_bytes);
    if (!crossed.empty())
      return input_error("the floor is already crossed: " + crossed +
                         "; free memory first, lower the floor, or begin anyway with --force");
  }
  return s;
}

const char* floor_step_name(FloorStep s) {
  switch (s) {
    case FloorStep::evict:
      return "evict";
    case FloorStep::drop_caches:
      return "drop_caches";
    case FloorStep::compact:
      return "compact";
    case FloorStep::pause:
      return "pause";
    case FloorStep::stop:
      return "stop";
  }
  return "?";
}

bool FloorLadder::below(const FloorReading& r, uint64_t extra) const {
  return (spec_.free_bytes && r.free < spec_.free_bytes + extra) ||
         (spec_.available_bytes && r.available < spec_.available_bytes + extra);
}

bool FloorLadder::deep(const FloorReading& r) const {
  return (spec_.free_bytes && r.free < spec_.free_bytes / 2) ||
         (spec_.available_bytes && r.available < spec_.available_bytes / 2);
}

FloorDecision FloorLadder::observe(const FloorReading& r, Clock::time_point now) {
  FloorDecision d;
  switch (state_) {
    case State::idle:
      if (below(r)) {
        d.crossed = true;
        d.act = FloorStep::evict;
        step_ = FloorStep::evict;
        since_ = now;
        state_ = State::climbing;
      }
      break;
    case State::climbing:
      if (!below(r)) {
        d.restored = true;
        state_ = State::idle;
        break;
      }
      // A step's grace ends early when memory falls through half a floor: the step evidently did not
      // restore it, and a load that fast would reach the wall before the grace ran out.
      if (now - since_ >= spec_.grace || deep(r)) {
        auto next = static_cast<FloorStep>(static_cast<int>(*step_) + 1);
        if (next == FloorStep::pause && !has_process_) {
          d.exhausted = true;
          state_ = State::exhausted;
          break;
        }
        d.act = next;
        step_ = next;
        since_ = now;
        if (next == FloorStep::pause) state_ = State::paused;
      }
      break;
    case State::exhausted:
      if (!below(r)) {
        d.restored = true;
        state_ = State::idle;
      }
      break;
    case State::paused:
      if (!below(r, spec_.hysteresis)) {
        d.resume = true;
        d.restored = true;
        state_ = State::idle;
      } else if (now - since_ >= spec_.max_pause) {
        d.act = FloorStep::stop;
        step_ = FloorStep::stop;
        since_ = now;
        state_ = State::stopping;
      }
      break;
    case State::stopping:
      if (now - since_ >= spec_.kill_grace) {
        d.kill = spec_.on_floor.empty();
        state_ = State::done;
      }
      break;
    case State::done:
      break;
  }
  return d;
}

json FloorStats::to_json() const {
  json a = json::object();
  for (int s = 1; s <= 5; ++s) a[floor_step_name(static_cast<FloorStep>(s))] = actions[s];
  json j = {{"crossings", crossings},
            {"actions", a},
            {"paused_ms", paused_ms},
            {"stopped", stopped},
            {"first_action_us", first_action_us},
            {"first_begun_us", first_begun_us},
            {"checks", checks}};
  if (lowest_free != UINT64_MAX) j["lowest_free"] = lowest_free;
  if (lowest_available != UINT64_MAX) j["lowest_available"] = lowest_available;
  if (!last_error.empty()) j["last_error"] = last_error;
  return j;
}

FloorKeeper::FloorKeeper(HostPaths paths, Tuner& tuner, std::string window_id, std::vector<fs::path> files, pid_t pid,
                         FloorSpec spec, EventSink sink)
    : paths_(std::move(paths)),
      tuner_(tuner),
      id_(std::move(window_id)),
      files_(std::move(files)),
      pid_(pid),
      ladder_(std::move(spec), pid > 0),
      sink_(std::move(sink)) {
  meminfo_ = [p = paths_] { return read_meminfo(p); };
  next_ = Clock::now();
  // Event-driven on top of the 10 ms check: memory stalls wake the agent at once.
  // 5 ms of stall in a 500 ms window; without CAP_SYS_RESOURCE the kernel takes only windows that
  // are multiples of 2 s (the first 5 ms of stall still fire it).
  auto t = PsiTrigger::create(paths_.proc / "pressure/memory", PsiKind::some, std::chrono::microseconds(5000),
                              std::chrono::microseconds(500000));
  if (!t)
    t = PsiTrigger::create(paths_.proc / "pressure/memory", PsiKind::some, std::chrono::microseconds(5000),
                           std::chrono::microseconds(2000000));
  if (t)
    psi_.emplace(std::move(*t));
  else
    log_debug("window " + id_ + ": no memory PSI trigger for the floor (" + describe(t.error()) +
              "); the 10 ms check alone");
}

FloorKeeper::~FloorKeeper() {
  stop_watch();
  for (auto& j : background_) j->thread.join();
  if (paused_locked()) (void)resume_tree();
  if (notify_fd_ >= 0) ::close(notify_fd_);
}

Result<FloorReading> FloorKeeper::read() {
  SPARK_TRY(MemInfo m, meminfo_());
  return FloorReading{m.free(), m.available()};
}

void FloorKeeper::emit(const std::string& type, const std::string& summary, json data) {
  log(type == "floor_restored" ? LogLevel::info : LogLevel::warning, summary, {{"WINDOW", id_}});
  if (!sink_) return;
  const bool queue = watching_;
  Event e;
  e.source = EventSource::window;
  e.type = type;
  e.subject = id_;
  e.summary = summary;
  e.data = std::move(data);
  if (type == "floor_crossed")
    e.hint = "the load is about to run the host out of memory; spark-tune climbs its ladder (events floor_action)";
  if (queue)
    queued_.push_back(std::move(e));  // the event log is the owner thread's: handed over by on_psi()
  else
    sink_(e);
}

namespace {

json reading_json(const FloorReading& r) { return {{"free", r.free}, {"available", r.available}}; }

std::string reading_text(const FloorReading& r) {
  return "free " + format_size(r.free) + ", available " + format_size(r.available);
}

}  // namespace

void FloorKeeper::report(FloorStep step, const std::string& name, const FloorReading& before, Clock::time_point started,
                         Clock::time_point finished, const Result<std::string>& done) {
  const auto& spec = ladder_.spec();
  json floors = {{"free", spec.free_bytes}, {"available", spec.available_bytes}};
  auto after = read();
  json data = {{"step", static_cast<int>(step)}, {"action", name}, {"before", reading_json(before)}, {"floor", floors}};
  if (after) data["after"] = reading_json(*after);
  data["took_us"] = std::chrono::duration_cast<std::chrono::microseconds>(finished - started).count();
  if (done) {
    data["detail"] = *done;
  } else {
    data["error"] = describe(done.error());
    stats_.last_error = describe(done.error());
  }
  if (crossed_at_ && !first_action_done_) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(finished - *crossed_at_).count();
    stats_.first_action_us.push_back(us);
    stats_.first_begun_us.push_back(
        std::chrono::duration_cast<std::chrono::microseconds>(started - *crossed_at_).count());
    stats_.times.push_back({*crossed_at_, started, finished});
    data["since_crossing_us"] = us;  // the reading below the floor -> the step done
    first_action_done_ = true;
  }
  ++stats_.actions[static_cast<int>(step)];
  emit("floor_action",
       "window " + id_ + ": floor step " + std::to_string(static_cast<int>(step)) + " " + name + ": " +
           (done ? *done : "failed: " + describe(done.error())) + (after ? " (now " + reading_text(*after) + ")" : ""),
       std::move(data));
}

void FloorKeeper::reap_background(bool wait) {
  for (auto it = background_.begin(); it != background_.end();) {
    auto& j = **it;
    if (!wait && !j.done) {
      ++it;
      continue;
    }
    j.thread.join();
    report(j.step, floor_step_name(j.step), j.before, j.started, j.finished, j.result);
    it = background_.erase(it);
  }
}

void FloorKeeper::tick(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  tick_locked(now);
}

// The next check: the period, or sooner when memory falls towards a floor: at a tenth of the time
// the floor is away at the rate it falls (the recent peak rate: a loader's memory moves in jumps of
// its read size), never sooner than fast_period. A load that takes 14 GiB/s (34 -> 12.7 GiB
// in 1.5 s, reported on a Spark) runs 140 MiB past a floor in one 10 ms period; paced, the checks
// come every millisecond over the last ~100 ms before the floor, and only then.
void FloorKeeper::pace(const FloorReading& r, Clock::time_point now) {
  const auto& spec = ladder_.spec();
  std::chrono::microseconds gap = spec.period;
  int64_t margin = INT64_MAX;
  if (spec.free_bytes) margin = std::min(margin, static_cast<int64_t>(r.free) - static_cast<int64_t>(spec.free_bytes));
  if (spec.available_bytes)
    margin = std::min(margin, static_cast<int64_t>(r.available) - static_cast<int64_t>(spec.available_bytes));
  if (margin == INT64_MAX) return;
  if (last_margin_) {
    auto dt = std::chrono::duration_cast<std::chrono::microseconds>(now - last_margin_->second).count();
    if (dt > 0) {
      // Quick to rise, slow to forget: a loader's memory moves in jumps (a read, then its copy),
      // and the pace must follow the jumps, not the average between them.
      double rate = static_cast<double>(last_margin_->first - margin) / static_cast<double>(dt);  // bytes/us
      fall_rate_ = std::max(rate, fall_rate_ * 0.9);
    }
  }
  last_margin_ = {margin, now};
  if (margin > 0 && fall_rate_ > 0 && spec.fast_period < gap) {
    double eta_us = static_cast<double>(margin) / fall_rate_;
    auto tenth = std::chrono::microseconds(static_cast<int64_t>(std::min(eta_us / 10, 1e12)));
    gap = std::clamp<std::chrono::microseconds>(tenth, spec.fast_period, gap);
  }
  next_ = now + gap;
}

void FloorKeeper::tick_locked(Clock::time_point now) {
  next_ = now + ladder_.spec().period;
  ++stats_.checks;
  auto r = read();
  if (!r) {
    stats_.last_error = describe(r.error());
    return;
  }
  pace(*r, now);
  stats_.lowest_free = std::min(stats_.lowest_free, r->free);
  stats_.lowest_available = std::min(stats_.lowest_available, r->available);
  reap_background(false);
  const auto& spec = ladder_.spec();
  json floors = {{"free", spec.free_bytes}, {"available", spec.available_bytes}};
  auto d = ladder_.observe(*r, now);
  if (d.crossed) {
    ++stats_.crossings;
    crossed_at_ = now;
    first_action_done_ = false;
    emit("floor_crossed", "window " + id_ + ": below the floor (" + reading_text(*r) + ")",
         {{"reading", reading_json(*r)}, {"floor", floors}});
  }
  if (d.resume) {
    auto res = resume_tree();
    if (!res) stats_.last_error = describe(res.error());
  }
  auto action = [&](FloorStep step, const std::string& name, const std::function<Result<std::string>()>& fn) {
    auto started = Clock::now();
    auto done = fn();
    report(step, name, *r, started, Clock::now(), done);
  };
  // drop_caches and compact_memory are host-wide and can block for seconds (measured: drop_caches up
  // to 2 s on a busy 24 GiB host): they run on a thread of their own, so the ladder goes on checking
  // and can pause the loader while they work. Their event comes when they are done.
  auto background = [&](FloorStep step) {
    auto job = std::make_unique<Background>();
    job->step = step;
    job->before = *r;
    job->started = Clock::now();
    Background* j = job.get();
    job->thread = std::thread([this, j] {
      // Host-wide and slow: never at the watch thread's real-time priority.
      sched_param sp{};
      (void)::pthread_setschedparam(::pthread_self(), SCHED_OTHER, &sp);
      j->result = take(j->step);
      j->finished = Clock::now();
      j->done = true;
    });
    background_.push_back(std::move(job));
  };
  if (d.act && (*d.act == FloorStep::drop_caches || *d.act == FloorStep::compact))
    background(*d.act);
  else if (d.act)
    action(*d.act, floor_step_name(*d.act), [&] { return take(*d.act); });
  if (d.kill)
    action(FloorStep::stop, "kill", [&]() -> Result<std::string> {
      kill_tree();
      return std::string("SIGKILL to what was left of process ") + std::to_string(pid_);
    });
  if (d.exhausted)
    emit("floor_action", "window " + id_ + ": below the floor after steps 1-3 and no process to pause",
         {{"step", 3},
          {"action", "exhausted"},
          {"before", reading_json(*r)},
          {"floor", floors},
          {"error", "the window watches no process (--pid, or spark-tune run): steps 4 and 5 cannot be taken"}});
  if (d.restored)
    emit("floor_restored", "window " + id_ + ": back above the floor (" + reading_text(*r) + ")",
         {{"reading", reading_json(*r)},
          {"floor", floors},
          {"resumed", d.resume},
          {"last_step", ladder_.last_step() ? static_cast<int>(*ladder_.last_step()) : 0}});
  // Reap a finished --on-floor command.
  if (on_floor_pid_ > 0 && ::waitpid(on_floor_pid_, nullptr, WNOHANG) == on_floor_pid_) on_floor_pid_ = 0;
}

Result<std::string> FloorKeeper::take(FloorStep step) {
  switch (step) {
    case FloorStep::evict:
      return evict_files();
    case FloorStep::drop_caches: {
      Trigger t{sysctl_target("vm.drop_caches"), "1", owner(),
                "below the floor: clean page cache dropped host-wide (every process loses its cache)",
                LogLevel::warning};
      SPARK_TRY_VOID(fire(tuner_.actuator(), t));
      return std::string("clean page cache dropped host-wide (vm.drop_caches = 1): other processes lost their cache");
    }
    case FloorStep::compact:
      SPARK_TRY_VOID(compact_memory(tuner_.actuator(), owner(), "below the floor"));
      return std::string("memory compacted (vm.compact_memory = 1)");
    case FloorStep::pause:
      return pause_tree();
    case FloorStep::stop:
      return stop_tree();
  }
  return input_error("unknown floor step");
}

Result<std::string> FloorKeeper::evict_files() {
  size_t evicted = 0, pageouts = 0;
  std::string first_error;
  std::vector<std::pair<dev_t, ino_t>> ids;
  for (const auto& f : files_) {
    if (auto e = evict_file(f); e)
      ++evicted;
    else if (first_error.empty())
      first_error = describe(e.error());
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0) ids.emplace_back(st.st_dev, st.st_ino);
  }
  if (!ids.empty())
    for (pid_t p : tree()) {
      auto maps = find_file_mappings(paths_, p, ids);
      if (!maps || maps->empty()) continue;
      std::vector<std::pair<uint64_t, uint64_t>> ranges;
      for (const auto& m : *maps) ranges.emplace_back(m.start, m.end);
      if (auto a = advise_process(p, ranges, MADV_PAGEOUT); a)
        pageouts += ranges.size();
      else if (first_error.empty())
        first_error = describe(a.error());
    }
  if (files_.empty()) return std::string("the window has no files to evict");
  std::string out = std::to_string(evicted) + " of " + std::to_string(files_.size()) + " files evicted, " +
                    std::to_string(pageouts) + " mappings paged out";
  if (!first_error.empty()) out += " (" + first_error + ")";
  return out;
}

std::vector<pid_t> FloorKeeper::tree() const {
  std::vector<pid_t> out;
  if (pid_ <= 0 || !process_alive(paths_, pid_)) return out;
  out.push_back(pid_);
  // <proc>/PID/task/TID/children (CONFIG_PROC_CHILDREN): a walk of the tree only, not of every
  // process on the host (the step's latency counts).
  auto children_of = [&](pid_t p, std::vector<pid_t>& into) -> bool {
    std::error_code ec;
    bool any_file = false;
    for (const auto& t : fs::directory_iterator(paths_.proc / std::to_string(p) / "task", ec)) {
      auto text = read_file(t.path() / "children");
      if (!text) continue;
      any_file = true;
      std::istringstream in(*text);
      pid_t c;
      while (in >> c) into.push_back(c);
    }
    return any_file;
  };
  std::vector<pid_t> probe;
  if (children_of(pid_, probe)) {
    for (size_t i = 0; i < out.size(); ++i) {
      std::vector<pid_t> kids;
      if (i == 0)
        kids = probe;
      else
        children_of(out[i], kids);
      for (pid_t c : kids)
        if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
    }
    return out;
  }
  // No children files: every process's parent from its stat.
  std::map<pid_t, std::vector<pid_t>> children;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(paths_.proc, ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t p = static_cast<pid_t>(std::stol(name));
    if (auto st = read_proc_stat(paths_, p); st && !st->finished()) children[st->ppid].push_back(p);
  }
  for (size_t i = 0; i < out.size(); ++i)
    for (pid_t c : children[out[i]]) out.push_back(c);
  return out;
}

namespace {

// The process's cgroup v2 path ("/a/b"), from <proc>/PID/cgroup's "0::" line.
std::optional<std::string> v2_cgroup_of(const HostPaths& paths, pid_t pid) {
  auto text = read_file(paths.proc / std::to_string(pid) / "cgroup");
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  return std::nullopt;
}

}  // namespace

Result<std::string> FloorKeeper::pause_tree() {
  auto pids = tree();
  if (pids.empty()) return sys_error(ESRCH, "pausing process " + std::to_string(pid_) + ": it is gone");
  // cgroup.freeze where the tree has a cgroup v2 of its own (nothing else in it).
  if (auto cg = v2_cgroup_of(paths_, pid_); cg && *cg != "/" && !cg->empty()) {
    std::string base = fs::exists(paths_.cgroup / "cgroup.controllers") ? "" : "unified";
    std::string rel = (base.empty() ? cg->substr(1) : base + *cg);
    fs::path dir = paths_.cgroup / rel;
    bool own = fs::exists(dir / "cgroup.freeze");
    if (own)
      if (auto procs = read_file(dir / "cgroup.procs"); procs) {
        std::istringstream in(*procs);
        pid_t p;
        while (in >> p)
          if (std::find(pids.begin(), pids.end(), p) == pids.end()) own = false;
      }
    if (own) {
      Target t{TargetKind::cgroup, rel + "/cgroup.freeze"};
      auto applied = tuner_.apply(owner(), {Change{t, "1", "floor: pause the window's process tree"}});
      if (applied) {
        frozen_cgroup_ = rel;
        paused_since_ = Clock::now();
        return "process tree of " + std::to_string(pid_) + " frozen (" + rel + "/cgroup.freeze = 1)";
      }
      log_warning("window " + id_ + ": freezing " + rel + " failed (" + describe(applied.error()) +
                  "); SIGSTOP instead");
    }
  }
  // Journaled before the first SIGSTOP (the window's owner state): an agent that dies while the
  // tree is stopped continues it at its next start (WindowManager::recover).
  journal_stopped(pids);
  for (pid_t p : pids)
    if (::kill(p, SIGSTOP) == 0) paused_pids_.push_back(p);
  // Children forked while the tree was being stopped.
  std::vector<pid_t> late;
  for (pid_t p : tree())
    if (std::find(paused_pids_.begin(), paused_pids_.end(), p) == paused_pids_.end()) late.push_back(p);
  if (!late.empty()) {
    std::vector<pid_t> all = paused_pids_;
    all.insert(all.end(), late.begin(), late.end());
    journal_stopped(all);
    for (pid_t p : late)
      if (::kill(p, SIGSTOP) == 0) paused_pids_.push_back(p);
  }
  if (paused_pids_.empty()) {
    journal_stopped({});
    return errno_error("SIGSTOP to process " + std::to_string(pid_));
  }
  paused_since_ = Clock::now();
  return std::to_string(paused_pids_.size()) + " processes stopped (SIGSTOP) from " + std::to_string(pid_);
}

void FloorKeeper::journal_stopped(const std::vector<pid_t>& pids) {
  auto d = read_journal(paths_);
  if (!d || !d->owners.contains(owner())) return;
  nlohmann::json st = d->owners[owner()];
  if (pids.empty()) {
    if (!st.contains("floor_stopped")) return;
    st.erase("floor_stopped");
  } else {
    nlohmann::json a = nlohmann::json::array();
    for (pid_t p : pids) {
      auto ps = read_proc_stat(paths_, p);
      a.push_back({{"pid", p}, {"start", ps ? ps->start_time : 0}});
    }
    st["floor_stopped"] = a;
  }
  if (auto r = tuner_.set_owner_state(owner(), st); !r)
    log_warning("window " + id_ + ": journaling the stopped processes: " + describe(r.error()));
}

Result<std::string> FloorKeeper::resume_tree() {
  std::string out;
  if (!frozen_cgroup_.empty()) {
    Target t{TargetKind::cgroup, frozen_cgroup_ + "/cgroup.freeze"};
    auto applied = tuner_.apply(owner(), {Change{t, "0", "floor: resume the window's process tree"}});
    if (!applied) return with_context(applied.error(), "thawing " + frozen_cgroup_);
    out = frozen_cgroup_ + " thawed";
    frozen_cgroup_.clear();
  }
  if (!paused_pids_.empty()) {
    for (pid_t p : paused_pids_) (void)::kill(p, SIGCONT);
    journal_stopped({});
    out += (out.empty() ? "" : ", ") + std::to_string(paused_pids_.size()) + " processes continued (SIGCONT)";
    paused_pids_.clear();
  }
  if (paused_since_) {
    stats_.paused_ms += std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *paused_since_).count();
    paused_since_.reset();
  }
  return out;
}

Result<std::string> FloorKeeper::stop_tree() {
  stats_.stopped = true;
  const auto& argv = ladder_.spec().on_floor;
  if (!argv.empty()) {
    (void)resume_tree();  // the command (docker stop, a graceful shutdown) needs the tree running
    // At nice 0 and the normal scheduling policy (the watch thread may run at a real-time one), not
    // at the agent's (core/process.h).
    SpawnOptions so;
    so.what = "starting --on-floor " + argv[0];
    so.env = environment_with({"SPARK_TUNE_WINDOW=" + id_, "SPARK_TUNE_PID=" + std::to_string(pid_)});
    so.search_path = true;
    SPARK_TRY(pid_t child, spawn_process(argv, so));
    on_floor_pid_ = child;
    return "--on-floor " + argv[0] + " started (pid " + std::to_string(child) + ")";
  }
  if (::kill(pid_, SIGTERM) != 0) return errno_error("SIGTERM to process " + std::to_string(pid_));
  (void)resume_tree();  // a stopped process handles its SIGTERM once continued
  return "SIGTERM to process " + std::to_string(pid_) + "; SIGKILL in " + format_duration(ladder_.spec().kill_grace) +
         " if it is still there";
}

void FloorKeeper::kill_tree() {
  for (pid_t p : tree()) (void)::kill(p, SIGKILL);
}

json FloorKeeper::finish() {
  stop_watch();
  deliver();
  std::lock_guard<std::mutex> lock(mu_);
  reap_background(true);
  if (paused_locked()) {
    auto r = resume_tree();
    if (!r) stats_.last_error = describe(r.error());
  }
  if (on_floor_pid_ > 0 && ::waitpid(on_floor_pid_, nullptr, WNOHANG) == on_floor_pid_) on_floor_pid_ = 0;
  auto j = stats_.to_json();
  j["floor"] = floor_to_json(ladder_.spec());
  j["watch"] = watch_json_locked();
  return j;
}

FloorStats FloorKeeper::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool FloorKeeper::paused() const {
  std::lock_guard<std::mutex> lock(mu_);
  return paused_locked();
}

FloorKeeper::Clock::time_point FloorKeeper::next_check() const {
  // The watch thread checks; the owner's loop has nothing to do (an hour: no overflow in its sums).
  // watch_ changes on the owner's thread only: no lock, so a step in progress never blocks the loop.
  if (watch_.joinable()) return Clock::now() + std::chrono::hours(1);
  std::lock_guard<std::mutex> lock(mu_);
  return next_;
}

int FloorKeeper::psi_fd() const {
  if (notify_fd_ >= 0 && watch_.joinable()) return notify_fd_;
  return psi_ ? psi_->fd() : -1;
}

void FloorKeeper::on_psi(Clock::time_point now) {
  if (!watch_.joinable()) {
    tick(now);
    return;
  }
  uint64_t n = 0;
  (void)!::read(notify_fd_, &n, sizeof n);
  deliver();
}

void FloorKeeper::deliver() {
  std::deque<Event> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out.swap(queued_);
  }
  if (sink_)
    for (const auto& e : out) sink_(e);
}

namespace {

// The once-per-process note that the floor has no reclaim tracepoints.
std::atomic<bool> g_no_wake_logged{false};

enum WatchTag : uint32_t { k_tag_stop = 0, k_tag_timer = 1, k_tag_psi = 2, k_tag_wake = 3 };

}  // namespace

Result<void> FloorKeeper::start_watch() {
  auto w = ReclaimWake::open(paths_);
  if (w) return start_watch(std::move(*w));
  return start_watch(nullptr, describe(w.error()));
}

Result<void> FloorKeeper::start_watch(std::unique_ptr<FloorWakeSource> wake, const std::string& no_wake) {
  if (watch_.joinable()) return sys_error(EALREADY, "window " + id_ + ": the floor's watch already runs");
  auto fail = [&](const std::string& what) -> Result<void> {
    int err = errno;
    for (int* fd : {&epoll_fd_, &timer_fd_, &stop_fd_, &notify_fd_})
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
    return sys_error(err, "window " + id_ + ": the floor's watch: " + what);
  };
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return fail("epoll_create1");
  timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (timer_fd_ < 0) return fail("timerfd_create");
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  notify_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd_ < 0 || notify_fd_ < 0) return fail("eventfd");
  auto add = [&](int fd, uint32_t events, WatchTag tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = tag;
    return ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
  };
  if (!add(stop_fd_, EPOLLIN, k_tag_stop) || !add(timer_fd_, EPOLLIN, k_tag_timer)) return fail("epoll_ctl");
  bool psi = psi_ && add(psi_->fd(), EPOLLPRI, k_tag_psi);
  if (wake && !add(wake->fd(), EPOLLIN, k_tag_wake)) {
    no_wake_ = wake->name() + ": epoll_ctl: " + std::strerror(errno);
    wake.reset();
  } else if (!wake) {
    no_wake_ = no_wake.empty() ? "no reclaim wake-up source" : no_wake;
  }
  (void)psi;
  wake_ = std::move(wake);
  if (!wake_ && !g_no_wake_logged.exchange(true))
    log_info("the load-window floor has no reclaim tracepoints (" + no_wake_ + "): it checks meminfo every " +
             std::to_string(ladder_.spec().period.count()) + " ms (sooner near the floor) and on memory PSI");
  {
    std::lock_guard<std::mutex> lock(mu_);
    watching_ = true;
    watch_ran_ = true;
    next_ = Clock::now();
  }
  watch_ = std::thread([this] { watch_loop(); });
  // The lowest real-time priority: on a host busy with the load (and everything else) a woken
  // thread waits for a CPU for milliseconds (measured here: p99 4-6 ms at load 10 on 2 CPUs); the
  // floor's 10 ms budget cannot. Its work per wake-up is one meminfo read (tens of microseconds);
  // a step's work is what the host needs done. Where the kernel refuses (no CAP_SYS_NICE, an RT
  // budget of 0 in the cgroup), it runs as a normal thread and watch_json() says so.
  {
    sched_param sp{};
    sp.sched_priority = 1;
    int rc = ::pthread_setschedparam(watch_.native_handle(), SCHED_FIFO, &sp);
    std::lock_guard<std::mutex> lock(mu_);
    realtime_ = rc == 0 ? "SCHED_FIFO 1" : std::string("no: ") + std::strerror(rc);
  }
  return {};
}

json FloorKeeper::watch_json() const {
  std::lock_guard<std::mutex> lock(mu_);
  return watch_json_locked();
}

json FloorKeeper::watch_json_locked() const {
  json j = {{"thread", watch_ran_},
            {"period_ms", ladder_.spec().period.count()},
            {"fast_period_us", ladder_.spec().fast_period.count()},
            {"psi", psi_.has_value()}};
  if (!realtime_.empty()) j["realtime"] = realtime_;
  if (wake_)
    j["reclaim_tracepoints"] = wake_->name();
  else
    j["reclaim_fallback"] = no_wake_.empty() ? "no watch thread: the agent's loop checks" : no_wake_;
  j["wakes"] = {{"timer", stats_.wakes_timer}, {"psi", stats_.wakes_psi}, {"reclaim", stats_.wakes_reclaim}};
  return j;
}

void FloorKeeper::watch_loop() {
  auto arm = [this](Clock::time_point at) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
    itimerspec its{};
    its.it_value.tv_sec = ns / 1'000'000'000;
    its.it_value.tv_nsec = ns % 1'000'000'000;
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    (void)::timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    arm(next_);
  }
  epoll_event evs[4];
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, evs, 4, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Cannot wait: check at the period all the same.
      std::this_thread::sleep_for(ladder_.spec().period);
      n = 0;
    }
    auto now = Clock::now();
    bool stop = false, timer = n == 0, psi = false, reclaim = false;
    for (int i = 0; i < n; ++i) switch (evs[i].data.u32) {
        case k_tag_stop:
          stop = true;
          break;
        case k_tag_timer: {
          uint64_t x;
          (void)!::read(timer_fd_, &x, sizeof x);
          timer = true;
          break;
        }
        case k_tag_psi:
          psi = true;
          break;
        case k_tag_wake:
          reclaim = wake_->drain() > 0;
          break;
      }
    if (stop) return;
    if (!timer && !psi && !reclaim) continue;
    bool have;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.wakes_timer += timer;
      stats_.wakes_psi += psi;
      stats_.wakes_reclaim += reclaim;
      tick_locked(now);
      arm(next_);
      have = !queued_.empty();
    }
    if (have) {
      uint64_t one = 1;
      (void)!::write(notify_fd_, &one, sizeof one);
    }
  }
}

void FloorKeeper::stop_watch() {
  if (!watch_.joinable()) return;
  uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
  watch_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    watching_ = false;
  }
  for (int* fd : {&epoll_fd_, &timer_fd_, &stop_fd_})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

}  // namespace spark::window

namespace spark::window {

json floor_ask_to_json(const FloorAsk& a) {
  json j = json::object();
  if (!a.free.empty()) j["free"] = a.free;
  if (!a.available.empty()) j["available"] = a.available;
  if (!a.on_floor.empty()) j["on_floor"] = a.on_floor;
  if (a.force) j["force"] = true;
  return j;
}

Result<FloorAsk> floor_ask_from_json(const json& j) {
  if (!j.is_object()) return input_error("floor: expected an object");
  FloorAsk a;
  try {
    a.free = j.value("free", std::string());
    a.available = j.value("available", std::string());
    a.on_floor = j.value("on_floor", std::vector<std::string>{});
    a.force = j.value("force", false);
  } catch (const json::exception& e) {
    return input_error(std::string("floor: ") + e.what());
  }
  // Sizes and shares check out before the host is asked (MemTotal 0: no upper bound yet).
  if (!a.free.empty()) SPARK_TRY_VOID(parse_floor(a.free, 0, "--free-floor"));
  if (!a.available.empty()) SPARK_TRY_VOID(parse_floor(a.available, 0, "--available-floor"));
  if (!a.on_floor.empty() && a.on_floor[0].empty()) return input_error("--on-floor: the command is empty");
  return a;
}

Result<std::optional<FloorSpec>> window_floor(const std::optional<FloorAsk>& asked,
                                              const std::map<std::string, std::string>& options,
                                              const std::function<bool()>& unified_host, const MemInfo& mem) {
  auto opt = [&](const char* k) -> std::string {
    auto it = options.find(k);
    return it == options.end() ? std::string() : it->second;
  };
  std::string mode = opt("window.floor");
  if (mode.empty()) mode = "unified";
  if (mode != "on" && mode != "off" && mode != "unified")
    return input_error("profile window.floor = '" + mode + "': expected on, off or unified");
  FloorAsk a = asked.value_or(FloorAsk{});
  bool asked_floor = !a.free.empty() || !a.available.empty();
  bool profile_on = mode == "on" || (mode == "unified" && !asked_floor && unified_host());
  if (!asked_floor && !profile_on) {
    if (!a.on_floor.empty()) return input_error("--on-floor needs a floor: give --free-floor or --available-floor");
    return std::optional<FloorSpec>();
  }
  if (profile_on) {
    if (a.free.empty()) a.free = opt("window.free_floor");
    if (a.available.empty()) a.available = opt("window.available_floor");
  }
  SPARK_TRY(FloorSpec s, resolve_floor(a, mem));
  if (!s.enabled()) return std::optional<FloorSpec>();
  return std::optional<FloorSpec>(s);
}

}  // namespace spark::window
