// The guard supervisor's runtime (guard/supervisor.h): its guards watched (OOM, pressure, growth,
// the host floor), hooks run, servers restarted and probed, guards resumed and ended. Admission
// (add) is guard/admission.cpp; the journaled state's codecs are guard/guard_state.cpp.
#include "guard/supervisor.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/fs.h"
#include "core/log.h"
#include "core/units.h"
#include "guard/guard_runtime.h"
#include "guard/host_floor.h"
#include "guard/systemd_scope.h"
#include "state/journal.h"
#include "telemetry/psi.h"

using spark::state::read_journal;

using spark::tune::ApplyOptions, spark::tune::Change, spark::tune::Tuner;

using spark::telemetry::PsiKind, spark::telemetry::PsiTrigger;

namespace spark::guard {

namespace {

// How long a second count of the same victim is taken for the group kill's echo of its kill.
constexpr auto k_oom_echo = std::chrono::seconds(2);

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

bool has_sigkill_pending(const HostPaths& paths, pid_t pid) {
  auto t = read_file(paths.proc / std::to_string(pid) / "status");
  if (!t) return false;
  for (const auto& line : split_lines(*t)) {
    if (line.rfind("ShdPnd:", 0) != 0 && line.rfind("SigPnd:", 0) != 0) continue;
    uint64_t mask = std::strtoull(trim(line.substr(7)).c_str(), nullptr, 16);
    if (mask & (1ull << (SIGKILL - 1))) return true;
  }
  return false;
}

}  // namespace

GuardSupervisor::GuardSupervisor(HostPaths paths, Tuner& tuner, EventSink sink, SupervisorConfig cfg)
    : paths_(std::move(paths)), tuner_(tuner), sink_(std::move(sink)), cfg_(std::move(cfg)) {}

GuardSupervisor::~GuardSupervisor() {
  // Guards stay journaled (and enforced by the kernel); hooks are ours: kill and reap them.
  for (auto& h : hooks_) {
    ::kill(h.hook.pid, SIGKILL);
    ::waitpid(h.hook.pid, nullptr, 0);
  }
}

Result<MemoryHierarchy> GuardSupervisor::hierarchy() {
  if (!h_) {
    SPARK_TRY(MemoryHierarchy h, find_memory_hierarchy(paths_));
    h_ = h;
  }
  return *h_;
}

void GuardSupervisor::emit(const std::string& id, const std::string& type, nlohmann::json fields) {
  Event e = make_event(id, type, std::move(fields));
  if (sink_) sink_(e);
  if (type == "oom_kill" || type == "host_floor") run_hook(e);
}

void GuardSupervisor::persist(Runtime& g) {
  if (auto r = tuner_.set_owner_state(guard_owner(g.st.id), g.st.to_json()); !r)
    log_error("guard " + g.st.id + ": journaling its state failed: " + describe(r.error()));
}

std::vector<std::string> GuardSupervisor::ids() const {
  std::vector<std::string> out;
  for (const auto& [id, g] : guards_) out.push_back(id);
  return out;
}

const GuardState* GuardSupervisor::state(const std::string& id) const {
  auto it = guards_.find(id);
  return it == guards_.end() ? nullptr : &it->second->st;
}

bool GuardSupervisor::active() const { return !guards_.empty() || !hooks_.empty(); }

namespace {
// A settled guard's memory.high: --memory-high as given, never above memory.max; none otherwise.
// A derived memory.high (90% of the budget, the earlier default) throttles a server that grows
// anonymous memory on a host without swap instead of letting memory.max kill it for the guard to
// restart: in the Debian 13 guest a grower under memory.high 100M / memory.max 200M crawled for
// 90 s (962 `high` events, no OOM), with memory.high at max it was OOM-killed at once.
std::optional<uint64_t> settled_high(const GuardState& st, uint64_t max) {
  if (!st.opt.memory_high) return std::nullopt;
  return std::min(*st.opt.memory_high, max);
}
}  // namespace

Result<void> GuardSupervisor::settle(Runtime& g) {
  SPARK_TRY(MemoryStats s, g.box->stats());
  Limits l;
  l.max = g.st.opt.memory_max;
  if (!l.max) l.max = page_round(s.usage + g.st.budget);
  l.high = settled_high(g.st, *l.max);
  if (*l.max < s.usage && !g.st.opt.force)
    return input_error("the limit " + format_size(*l.max) + " is below what the box already uses (" +
                       format_size(s.usage) + "): raise it or pass --force");
  auto r = tuner_.apply(guard_owner(g.st.id), g.box->limit_changes(l, "guard " + g.st.id + " budget"), {});
  if (!r) return with_context(r.error(), "setting guard " + g.st.id + "'s limits");
  g.st.settled = true;
  g.st.footprint = s.usage;
  g.st.limit = *l.max;
  GrowthConfig gc;
  gc.warn_eta = g.st.opt.warn_eta;
  // The growth watch follows anon: the cache part of the footprint is reclaimed before a kill.
  g.growth.emplace(gc, s.anon, *l.max);
  g.oom_kills_seen = s.oom_kills;
  return {};
}

void GuardSupervisor::settle_now(Runtime& g) {
  auto now = Clock::now();
  if (auto r = settle(g); !r) {
    log_error("guard " + g.st.id + ": " + describe(r.error()));
    emit(g.st.id, "guard_error", {{"error", describe(r.error())}});
    g.settle_at = now + Ms(5000);
    return;
  }
  g.settle_at = {};
  persist(g);
  emit(g.st.id, "guard_settled", {{"footprint", g.st.footprint}, {"budget", g.st.budget}, {"limit", g.st.limit}});
}

Result<void> GuardSupervisor::setup_watch(Runtime& g) {
  SPARK_TRY(MemoryStats s, g.box->stats());
  g.oom_kills_seen = s.oom_kills;
  if (g.box->version() == CgroupVersion::v1) {
    SPARK_TRY(g.oom_fd, register_v1_event(tuner_.actuator(), *g.box, "memory.oom_control", ""));
    auto p = register_v1_event(tuner_.actuator(), *g.box, "memory.pressure_level", "medium");
    if (p)
      g.pressure_fd = std::move(*p);
    else
      log_warning("guard " + g.st.id + ": no vmpressure notification: " + describe(p.error()));
  } else {
    auto ev = open_events_watch(*g.box);
    if (ev) g.events_fd = std::move(*ev);
    auto p = PsiTrigger::create(g.box->file("memory.pressure"), PsiKind::some, k_box_psi_stall, k_box_psi_window);
    if (p)
      g.pressure_fd = Fd(p->release());
    else
      log_warning("guard " + g.st.id + ": no PSI trigger: " + describe(p.error()));
  }
  if (auto procs = g.box->procs(); procs.ok()) g.last_procs = *procs;
  g.next_sample = Clock::now();
  return {};
}

Result<void> GuardSupervisor::end(const std::string& id, const std::string& reason) {
  auto it = guards_.find(id);
  if (it == guards_.end()) return input_error("no guard '" + id + "' in this process");
  Result<void> r;
  {
    EndReserve::Spend spend(reserve_);
    r = end_guard(paths_, tuner_, id);
  }
  Runtime& g = *it->second;
  if (!r) {
    // Kept: nothing watched or restarted any more, only the end retried (tick) until it works.
    g.oom_fd.reset();
    g.pressure_fd.reset();
    g.events_fd.reset();
    g.pidfd.reset();
    g.probe.reset();
    g.phase = Runtime::Phase::running;
    g.settle_at = {};
    g.fast_until = {};
    g.end_retry.reason = reason;
    auto wait = g.end_retry.failed(Clock::now());
    log_error("guard " + id + " could not end (" + reason + "): " + describe(r.error()) + "; retrying in " +
                  format_duration(wait) + " (or run spark-tune revert)",
              {{"GUARD", id}});
    if (g.end_retry.failures == 1)
      emit(id, "guard_error",
           {{"error", "could not end (" + reason + "): " + describe(r.error()) + "; retrying"},
            {"reason", reason},
            {"retry_in_ms", wait.count()}});
    return r;
  }
  nlohmann::json f = {{"reason", reason}, {"pid", g.st.pid}, {"cgroup", g.st.box}};
  if (g.end_retry.failures) f["failed_tries"] = g.end_retry.failures;
  emit(id, "guard_end", f);
  if (g.main_is_child && g.st.pid > 0) reap_child(g.st.pid);
  guards_.erase(it);
  return r;
}

bool GuardSupervisor::ending(const std::string& id) const {
  auto it = guards_.find(id);
  return it != guards_.end() && it->second->end_retry.pending();
}

void GuardSupervisor::retry_end(const std::string& id) {
  auto it = guards_.find(id);
  if (it == guards_.end()) return;
  std::string why = it->second->end_retry.reason.empty() ? std::string("retry") : it->second->end_retry.reason;
  (void)end(id, why);  // logged (and rescheduled) by end on failure
}

void GuardSupervisor::drop(const std::string& id) { guards_.erase(id); }

Result<size_t> GuardSupervisor::resume() {
  SPARK_TRY(auto list, list_guards(paths_));
  SPARK_TRY(MemoryHierarchy h, hierarchy());
  size_t n = 0;
  for (auto& st : list) {
    if (guards_.count(st.id)) continue;
    auto g = std::make_unique<Runtime>();
    g->st = st;
    g->box = std::make_unique<CgroupBox>(paths_, h, st.box);
    if (!g->box->exists()) {
      // Through the one end path (reserve, backoff): a failed release is retried, never dropped.
      log_warning("guard " + st.id + ": its cgroup " + st.box + " is gone; ending it");
      std::string id = st.id;
      guards_[id] = std::move(g);
      (void)end(id, "its cgroup is gone");
      continue;
    }
    if (!st.opt.until_port.empty())
      if (auto a = parse_port_address(st.opt.until_port); a.ok()) g->port = *a;
    if (auto r = setup_watch(*g); !r) {
      log_error("guard " + st.id + ": cannot watch it again: " + describe(r.error()));
      continue;
    }
    if (st.settled) {
      GrowthConfig gc;
      gc.warn_eta = st.opt.warn_eta;
      auto s = g->box->stats();
      g->growth.emplace(gc, s ? s->anon : 0, st.limit);
    } else {
      g->settle_at = Clock::now();
    }
    bool alive = false;
    if (st.pid > 0) {
      auto fd = open_pidfd(st.pid);
      auto procs = g->box->procs();
      alive = fd.ok() && process_alive(paths_, st.pid) && procs.ok() &&
              std::find(procs->begin(), procs->end(), st.pid) != procs->end();
      if (alive) g->pidfd = std::move(*fd);
    }
    std::string id = st.id;
    Runtime& ref = *g;
    guards_[id] = std::move(g);
    emit(id, "guard_resume", {{"pid", st.pid}, {"cgroup", st.box}, {"alive", alive}});
    if (st.pid > 0 && !alive) handle_exit(ref, std::nullopt);
    ++n;
  }
  return n;
}

std::vector<pollfd> GuardSupervisor::poll_fds() {
  std::vector<pollfd> out;
  for (const auto& [id, g] : guards_) {
    if (g->oom_fd.valid()) out.push_back({g->oom_fd.get(), POLLIN, 0});
    if (g->pressure_fd.valid())
      out.push_back(
          {g->pressure_fd.get(), static_cast<short>(g->box->version() == CgroupVersion::v1 ? POLLIN : POLLPRI), 0});
    if (g->events_fd.valid()) out.push_back({g->events_fd.get(), POLLPRI, 0});
    if (g->pidfd.valid()) out.push_back({g->pidfd.get(), POLLIN, 0});
  }
  for (const auto& h : hooks_) out.push_back({h.pidfd.get(), POLLIN, 0});
  return out;
}

void GuardSupervisor::on_ready(int fd, Clock::time_point now) {
  for (auto& h : hooks_)
    if (h.pidfd.get() == fd) {
      tick();  // reaps it
      return;
    }
  for (auto& [id, gp] : guards_) {
    Runtime& g = *gp;
    if (g.oom_fd.valid() && fd == g.oom_fd.get()) {
      drain_eventfd(fd);
      // The notification comes as the OOM starts; the kill (and its counter) follow within ms.
      g.fast_until = now + Ms(500);
      check_oom(g);
      return;
    }
    if (g.events_fd.valid() && fd == g.events_fd.get()) {
      char buf[512];
      (void)!::pread(fd, buf, sizeof buf, 0);
      g.fast_until = now + Ms(500);
      check_oom(g);
      return;
    }
    if (g.pressure_fd.valid() && fd == g.pressure_fd.get()) {
      if (g.box->version() == CgroupVersion::v1) drain_eventfd(fd);
      if (!g.pressure_once || now - g.last_pressure >= cfg_.pressure_repeat) {
        g.pressure_once = true;
        g.last_pressure = now;
        auto s = g.box->stats();
        nlohmann::json f = {
            {"reason", "pressure"},
            {"pressure", g.box->version() == CgroupVersion::v1 ? "vmpressure medium" : "psi some 300ms/2s"},
            {"rate_bytes_per_s", g.growth ? g.growth->rate() : 0.0}};
        if (s) f["anon"] = s->anon, f["usage"] = s->usage, f["limit"] = g.st.limit;
        f["growers"] = growers(g);
        emit(id, "memory_growth", f);
      }
      return;
    }
    if (g.pidfd.valid() && fd == g.pidfd.get()) {
      std::optional<int> status;
      if (g.main_is_child) status = reap_child(g.st.pid);
      g.pidfd.reset();
      handle_exit(g, status);
      return;
    }
  }
}

nlohmann::json GuardSupervisor::growers(Runtime& g) {
  nlohmann::json out = nlohmann::json::array();
  auto procs = g.box->procs();
  if (!procs) return out;
  struct P {
    pid_t pid;
    uint64_t rss;
    int64_t growth;
  };
  std::vector<P> ps;
  for (pid_t p : *procs) {
    uint64_t rss = process_rss(paths_, p);
    auto it = g.rss_then.find(p);
    int64_t growth = static_cast<int64_t>(rss) - static_cast<int64_t>(it == g.rss_then.end() ? 0 : it->second);
    ps.push_back({p, rss, growth});
  }
  std::sort(ps.begin(), ps.end(), [](const P& a, const P& b) { return a.growth > b.growth; });
  for (size_t i = 0; i < ps.size() && i < 3; ++i)
    out.push_back(
        {{"pid", ps[i].pid}, {"comm", process_comm(paths_, ps[i].pid)}, {"rss", ps[i].rss}, {"growth", ps[i].growth}});
  return out;
}

void GuardSupervisor::check_oom(Runtime& g) {
  auto s = g.box->stats();
  if (!s || s->oom_kills <= g.oom_kills_seen) return;
  uint64_t kills = s->oom_kills - g.oom_kills_seen;
  g.oom_kills_seen = s->oom_kills;
  auto now = Clock::now();
  std::erase_if(g.reported_victims, [&](const auto& v) { return now - v.second > k_oom_echo; });
  // Victims: members that are gone, dying, or have SIGKILL pending since the last look.
  nlohmann::json victims = nlohmann::json::array();
  auto now_procs = g.box->procs();
  std::vector<pid_t> candidates = g.last_procs;
  auto add = [&](pid_t p) {
    if (p > 0 && std::find(candidates.begin(), candidates.end(), p) == candidates.end()) candidates.push_back(p);
  };
  add(g.st.pid);
  for (const auto& v : g.reported_victims) add(v.first);
  bool known_again = false;  // a victim this guard reported already
  for (pid_t p : candidates) {
    bool present = now_procs && std::find(now_procs->begin(), now_procs->end(), p) != now_procs->end();
    if (present && process_alive(paths_, p) && !has_sigkill_pending(paths_, p)) continue;
    if (g.reported_victims.contains(p)) {
      known_again = true;
      continue;
    }
    victims.push_back(p);
  }
  if (now_procs) g.last_procs = *now_procs;
  // The group kill's second count of a victim already reported: the same kill, not a new one.
  if (victims.empty() && known_again && s->oom_group_kills > 0 && g.last_oom_event != Clock::time_point{} &&
      now - g.last_oom_event <= k_oom_echo)
    return;
  for (const auto& v : victims) g.reported_victims[v.get<pid_t>()] = now;
  g.last_oom_event = now;
  pid_t pid = g.st.pid;
  if (!victims.empty() && std::find(victims.begin(), victims.end(), nlohmann::json(g.st.pid)) == victims.end())
    pid = victims[0].get<pid_t>();
  emit(g.st.id, "oom_kill",
       {{"pid", pid},
        {"victims", victims},
        {"kills", kills},
        {"oom_kills_total", s->oom_kills},
        {"cgroup", g.st.box},
        {"limit", g.st.limit},
        {"usage", s->usage},
        {"peak", s->peak},
        {"anon", s->anon}});
  // What the dying server held says nothing about growth: start the watch over.
  if (g.growth) g.growth->reset_baseline(0, g.st.limit);
  g.rss_then.clear();
}

void GuardSupervisor::run_hook(const Event& e) {
  auto it = guards_.find(e.subject);
  if (it == guards_.end() || it->second->st.opt.on_oom.empty()) return;
  const auto& opt = it->second->st.opt;
  auto h = spawn_hook(opt.on_oom, e.to_line());
  if (!h) {
    log_error("guard " + e.subject + ": --on-oom hook failed to start: " + describe(h.error()));
    return;
  }
  RunningHook rh;
  rh.guard_id = e.subject;
  rh.hook = *h;
  rh.deadline = h->started + opt.hook_timeout;
  auto fd = open_pidfd(h->pid);
  if (fd) rh.pidfd = std::move(*fd);
  if (sink_)
    sink_(make_event(e.subject, "hook_start", {{"hook_pid", h->pid}, {"hook", opt.on_oom[0]}, {"for", e.type}}));
  hooks_.push_back(std::move(rh));
}

void GuardSupervisor::handle_exit(Runtime& g, std::optional<int> status) {
  check_oom(g);
  bool oom = false;
  nlohmann::json f = {{"pid", g.st.pid}};
  if (status) {
    f["status"] = describe_status(*status);
    oom = WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL;
  }
  emit(g.st.id, "server_exit", f);
  bool clean = status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
  (void)oom;
  if (!g.st.opt.restart || clean || g.st.launch.argv.empty()) {
    auto r = end(g.st.id, clean ? "server exited" : "server died");
    if (!r) log_error("ending guard: " + describe(r.error()));
    return;
  }
  // Restart budget: restarts within the window.
  int64_t now_ms = unix_ms();
  auto& rs = g.st.restarts_ms;
  rs.erase(
      std::remove_if(rs.begin(), rs.end(), [&](int64_t t) { return now_ms - t > g.st.opt.restart_window.count(); }),
      rs.end());
  if (static_cast<int>(rs.size()) >= g.st.opt.restart_max) {
    emit(g.st.id, "restart_limit",
         {{"restarts", rs.size()},
          {"window_s", g.st.opt.restart_window.count() / 1000.0},
          {"message", "restart loop stopped at its cap: " + std::to_string(rs.size()) + " restarts within " +
                          format_duration(g.st.opt.restart_window)}});
    log_error("guard " + g.st.id + ": restart loop stopped at its cap (" + std::to_string(rs.size()) +
              " restarts within " + format_duration(g.st.opt.restart_window) + ")");
    auto r = end(g.st.id, "restart cap reached");
    if (!r) log_error("ending guard: " + describe(r.error()));
    return;
  }
  // Whatever is left of the old server goes first (v1 kills one victim, not the whole box).
  (void)g.box->kill_all(tuner_.actuator());
  Ms delay{0};
  if (!rs.empty() && g.st.opt.restart_backoff.count() > 0) {
    double d =
        static_cast<double>(g.st.opt.restart_backoff.count()) * std::pow(2.0, static_cast<double>(rs.size() - 1));
    delay = Ms(static_cast<int64_t>(std::min(d, 30000.0)));
  }
  g.phase = Runtime::Phase::restart_wait;
  g.restart_at = Clock::now() + delay;
  if (delay.count() == 0) start_server(g);
}

Result<std::string> GuardSupervisor::scope_with(pid_t pid, const std::string& name, const std::string& description) {
  ScopeRequest req;
  req.name = name;
  req.pids = {pid};
  req.description = description;
  SPARK_TRY(std::string job, cfg_.start_scope ? cfg_.start_scope(req) : start_transient_scope(req));
  (void)job;
  SPARK_TRY(MemoryHierarchy h, hierarchy());
  for (int i = 0; i < 200; ++i) {  // the job moves the process; wait for it (at most 2 s)
    auto c = memory_cgroup_of(paths_, h, pid);
    if (c.ok() && fs::path(*c).filename() == name) return *c;
    ::usleep(10000);
  }
  return sys_error(ETIMEDOUT, "systemd did not move process " + std::to_string(pid) + " into " + name);
}

// A guard whose box is a systemd scope: the scope is systemd's, and systemd stops it once its
// processes are gone (a memcg OOM with memory.oom.group kills them all; so does kill -9 of a
// server without children). A process joining a scope being stopped would be killed with it, so
// every restart asks for a new scope with the waiting child in it, moves the guard's limits and
// watches there, and lets go of the old scope's (restored, or gone with it).
Result<void> GuardSupervisor::join_new_scope(Runtime& g, pid_t pid) {
  SPARK_TRY(std::string name,
            scope_unit_name(std::string(k_box_prefix) + g.st.id + "-r" + std::to_string(g.st.restarts_ms.size() + 1)));
  SPARK_TRY(std::string path, scope_with(pid, name,
                                         "spark-tune guard " + g.st.id + " (process " + std::to_string(pid) +
                                             ", restart " + std::to_string(g.st.restarts_ms.size() + 1) + ")"));
  SPARK_TRY(MemoryHierarchy h, hierarchy());
  std::string owner = guard_owner(g.st.id);
  g.box = std::make_unique<CgroupBox>(paths_, h, path);
  g.st.box = path;
  g.st.scope = name;
  Limits l;
  l.high = g.st.opt.memory_high;
  l.max = g.st.opt.memory_max;
  if (g.st.settled) {
    l.max = g.st.limit;
    l.high = settled_high(g.st, g.st.limit);
  }
  // One transaction: the new scope's limits, the old scope's layers released (restored, or
  // counted restored with the cgroup gone), the guard's state naming the new scope.
  ApplyOptions ao;
  ao.replace = true;
  ao.owner_state = g.st.to_json();
  std::vector<Change> changes;
  if (l.high || l.max) changes = g.box->limit_changes(l, "guard " + g.st.id + " budget");
  if (auto r = tuner_.apply(owner, changes, ao); !r)
    return with_context(r.error(), "setting guard " + g.st.id + "'s limits on " + name);
  g.events_fd.reset();
  g.pressure_fd.reset();
  return setup_watch(g);
}

void GuardSupervisor::start_server(Runtime& g) {
  auto pid = g.st.scope.empty() ? spawn_in_box(g.st.launch, *g.box, tuner_.actuator())
                                : spawn_gated(g.st.launch, [&](pid_t p) { return join_new_scope(g, p); });
  g.st.restarts_ms.push_back(unix_ms());
  if (!pid) {
    log_error("guard " + g.st.id + ": " + describe(pid.error()));
    emit(g.st.id, "restart_failed", {{"error", describe(pid.error())}});
    persist(g);
    handle_exit(g, std::nullopt);  // counts against the cap like a crash
    return;
  }
  g.st.pid = *pid;
  g.main_is_child = true;
  if (auto fd = open_pidfd(*pid); fd.ok()) g.pidfd = std::move(*fd);
  g.spawned_at = Clock::now();
  g.last_procs = {*pid};
  g.rss_then.clear();
  persist(g);
  emit(g.st.id, "server_restart", {{"pid", *pid}, {"attempt", g.st.restarts_ms.size()}, {"argv", g.st.launch.argv}});
  if (g.port) {
    g.phase = Runtime::Phase::probing;
    g.next_probe = g.spawned_at;
  } else {
    g.phase = Runtime::Phase::running;
  }
  // After a restart the footprint is measured again once the load is done.
  if (g.st.opt.settle_after.count() > 0)
    g.settle_at = g.spawned_at + g.st.opt.settle_after;
  else if (g.growth)
    g.growth->reset_baseline(0, g.st.limit);
}

void GuardSupervisor::sample(Runtime& g, Clock::time_point now) {
  auto s = g.box->stats();
  if (!s) return;
  if (s->oom_kills > g.oom_kills_seen) check_oom(g);
  if (now - g.rss_then_time >= Ms(1000)) {
    // Keep the per-process picture of a second ago for "the biggest growers".
    if (auto procs = g.box->procs(); procs.ok()) {
      g.last_procs = *procs;
      std::map<pid_t, uint64_t> m;
      for (pid_t p : *procs) m[p] = process_rss(paths_, p);
      if (g.rss_then.empty() || now - g.rss_then_time >= Ms(3000)) {
        g.rss_then = std::move(m);
        g.rss_then_time = now;
      }
    }
  }
  check_host_floor(g, now);
  if (!g.growth || g.phase != Runtime::Phase::running || !g.pidfd.valid()) return;
  auto host = read_meminfo(paths_);
  GrowthSample gs{now, s->anon, host ? host->available() : 0};
  if (auto w = g.growth->add(gs)) {
    emit(g.st.id, "memory_growth",
         {{"reason", w->reason},
          {"rate_bytes_per_s", w->rate},
          {"anon", w->anon},
          {"usage", s->usage},
          {"used", w->used},
          {"budget", w->budget},
          {"left", w->left},
          {"limit", g.st.limit},
          {"eta_s", w->eta_s},
          {"host_available", w->host_available},
          {"host_eta_s", w->host_eta_s},
          {"growers", growers(g)}});
  }
}

// Issue 14 part 3: below the host floor the guard's warning, hook and restart run as for its own
// budget, with the host named as the cause.
void GuardSupervisor::check_host_floor(Runtime& g, Clock::time_point now) {
  if (!g.st.host_floor || g.phase != Runtime::Phase::running || !g.pidfd.valid()) return;
  if (!g.host_floor) g.host_floor.emplace(g.st.host_floor);
  auto host = read_meminfo(paths_);
  if (!host) return;
  auto c = g.host_floor->add(host->available(), now);
  if (!c) return;
  auto s = g.box->stats();
  nlohmann::json f = {{"reason", "host_floor"},    {"cause", "host"},         {"host_available", c->available},
                      {"host_floor", c->floor},    {"budget", g.st.budget},   {"limit", g.st.limit},
                      {"usage", s ? s->usage : 0}, {"anon", s ? s->anon : 0}, {"growers", growers(g)}};
  emit(g.st.id, "memory_growth", f);
  if (!c->first) return;
  bool restart = g.st.opt.restart && !g.st.launch.argv.empty();
  f["action"] = restart ? "restart" : "hook";
  f["pid"] = g.st.pid;
  emit(g.st.id, "host_floor", f);  // runs the --on-oom hook, as a kill by the budget would
  log_warning("guard " + g.st.id + ": the host is below its floor (MemAvailable " + format_size(c->available) + " < " +
              format_size(c->floor) + "; the server's cgroup does not see unified GPU memory)" +
              (restart ? ": stopping the server for its restart" : ""));
  // With --restart, the server is stopped so the restart runs as after a kill by the budget.
  if (restart) (void)g.box->kill_all(tuner_.actuator());
}

void GuardSupervisor::tick() {
  auto now = Clock::now();
  last_tick_ = now;
  // Hooks: reap, or kill after their timeout.
  for (auto it = hooks_.begin(); it != hooks_.end();) {
    auto st = reap_child(it->hook.pid);
    if (st) {
      double ms = std::chrono::duration<double, std::milli>(now - it->hook.started).count();
      if (sink_)
        sink_(make_event(it->guard_id, "hook_done",
                         {{"hook_pid", it->hook.pid},
                          {"status", describe_status(*st)},
                          {"duration_ms", ms},
                          {"timed_out", it->killed}}));
      it = hooks_.erase(it);
      continue;
    }
    if (!it->killed && now >= it->deadline) {
      log_warning("guard " + it->guard_id + ": --on-oom hook " + std::to_string(it->hook.pid) +
                  " hung; killed after its timeout");
      ::kill(-it->hook.pid, SIGKILL);  // its session (it ran setsid)
      ::kill(it->hook.pid, SIGKILL);
      it->killed = true;
    }
    ++it;
  }
  // Guards ended by another spark-tune process.
  if (now >= next_journal_check_) {
    next_journal_check_ = now + cfg_.journal_check;
    if (auto d = read_journal(paths_); d.ok()) {
      std::vector<std::string> gone;
      for (const auto& [id, g] : guards_)
        if (!d->owners.contains(guard_owner(id))) gone.push_back(id);
      for (const auto& id : gone) {
        emit(id, "guard_end", {{"reason", "ended by another spark-tune process"}});
        drop(id);
      }
    }
  }
  std::vector<std::string> ids = this->ids();
  for (const auto& id : ids) {
    auto it = guards_.find(id);
    if (it == guards_.end()) continue;
    Runtime& g = *it->second;
    if (g.end_retry.pending()) {  // an end that failed: only its retry
      if (g.end_retry.due(now)) retry_end(id);
      continue;
    }
    if (g.phase == Runtime::Phase::restart_wait && now >= g.restart_at) {
      start_server(g);
      if (!guards_.count(id) || g.end_retry.pending()) continue;
    }
    if (g.phase == Runtime::Phase::probing && now >= g.next_probe) {
      g.next_probe = now + cfg_.probe_interval;
      if (!g.probe) g.probe = std::make_unique<PortProbe>(*g.port);
      if (g.probe->ready(now)) {
        g.phase = Runtime::Phase::running;
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - g.spawned_at).count();
        emit(id, "server_ready", {{"pid", g.st.pid}, {"address", g.port->text()}, {"ms_since_start", ms}});
        if (!g.st.settled && g.st.opt.settle_on_ready)
          settle_now(g);
        else if (g.st.opt.settle_on_ready && g.growth)  // a restarted server finished loading
          if (auto s = g.box->stats(); s.ok()) g.growth->reset_baseline(s->anon, g.st.limit);
      }
    }
    if (!g.st.settled && g.settle_at != Clock::time_point{} && now >= g.settle_at) {
      settle_now(g);
    } else if (g.st.settled && g.settle_at != Clock::time_point{} && now >= g.settle_at && g.growth) {
      // A restarted server finished loading: new baseline.
      if (auto s = g.box->stats(); s.ok()) g.growth->reset_baseline(s->anon, g.st.limit);
      g.settle_at = {};
    }
    bool fast = now < g.fast_until;
    if (fast) check_oom(g);
    if (now >= g.next_sample) {
      g.next_sample = now + cfg_.sample_interval;
      sample(g, now);
    }
  }
}

std::optional<Clock::time_point> GuardSupervisor::next_timer() {
  auto now = Clock::now();
  auto next = now + cfg_.journal_check;
  next = std::min(next, next_journal_check_);
  for (const auto& h : hooks_) next = std::min(next, h.deadline);
  for (const auto& [id, g] : guards_) {
    if (g->end_retry.pending()) {
      next = std::min(next, *g->end_retry.at);
      continue;
    }
    next = std::min(next, g->next_sample);
    // Every ms after the last tick while an OOM is being counted: a time fixed between two asks,
    // so a loop that asks again after its poll finds it due (now + 1 ms never would be).
    if (now < g->fast_until) next = std::min(next, last_tick_ + Ms(1));
    if (g->phase == Runtime::Phase::restart_wait) next = std::min(next, g->restart_at);
    if (g->phase == Runtime::Phase::probing) next = std::min(next, g->next_probe);
    if (g->settle_at != Clock::time_point{}) next = std::min(next, g->settle_at);
  }
  if (!hooks_.empty()) next = std::min(next, last_tick_ + Ms(50));
  return next;
}

void GuardSupervisor::run_once(Ms max_wait) {
  LoopPart* self = this;
  if (auto r = run_loop_once({&self, 1}, max_wait); !r) log_warning("guard: " + describe(r.error()));
}

}  // namespace spark::guard
