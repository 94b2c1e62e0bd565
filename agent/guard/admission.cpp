// Admission (guard/supervisor.h, GuardSupervisor::add): a guard request validated in full, then
// set up as one transaction (box journaled first, the process moved in, limits, the watch); on
// any error nothing is left changed.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "core/fs.h"
#include "core/log.h"
#include "core/units.h"
#include "guard/guard_runtime.h"
#include "guard/host_floor.h"
#include "guard/supervisor.h"
#include "guard/systemd_scope.h"

using spark::tune::ApplyOptions;

namespace spark::guard {

namespace {

Result<ServerLaunch> launch_of(const HostPaths& paths, pid_t pid, const std::vector<std::string>& command) {
  ServerLaunch l;
  std::vector<std::string> argv = command;
  if (argv.empty()) {
    SPARK_TRY(std::string cmdline, read_file(paths.proc / std::to_string(pid) / "cmdline"));
    size_t start = 0;
    while (start < cmdline.size()) {
      size_t z = cmdline.find('\0', start);
      if (z == std::string::npos) z = cmdline.size();
      argv.push_back(cmdline.substr(start, z - start));
      start = z + 1;
    }
  }
  if (argv.empty())
    return input_error("process " + std::to_string(pid) + " has no command line to restart (a kernel thread?)");
  // The exe link is exact even where argv[0] is a bare name run through PATH.
  std::error_code ec;
  fs::path exe = fs::read_symlink(paths.proc / std::to_string(pid) / "exe", ec);
  if (command.empty() && !ec && fs::exists(exe)) argv[0] = exe.string();
  SPARK_TRY(argv[0], resolve_executable(argv[0]));
  l.argv = argv;
  fs::path cwd = fs::read_symlink(paths.proc / std::to_string(pid) / "cwd", ec);
  l.cwd = ec ? std::string("/") : cwd.string();
  l.uid = ::getuid();
  l.gid = ::getgid();
  if (auto adj = read_value(paths.proc / std::to_string(pid) / "oom_score_adj"))
    l.oom_score_adj = std::atoi(adj->c_str());
  if (auto st = read_file(paths.proc / std::to_string(pid) / "status"); st.ok())
    for (const auto& line : split_lines(*st)) {
      if (line.rfind("Uid:", 0) == 0) l.uid = static_cast<uid_t>(std::strtoul(line.c_str() + 4, nullptr, 10));
      if (line.rfind("Gid:", 0) == 0) l.gid = static_cast<gid_t>(std::strtoul(line.c_str() + 4, nullptr, 10));
    }
  return l;
}

}  // namespace

Result<std::string> GuardSupervisor::add(const GuardOptions& o) {
  // 1. Validate everything before changing anything.
  if ((o.pid > 0) == !o.cgroup.empty()) return input_error("give exactly one of --pid PID or --cgroup PATH");
  if (guards_.size() >= k_max_guards)
    return sys_error(EBUSY, std::to_string(guards_.size()) +
                                " guards are held, the limit: end one first "
                                "(spark-tune guard list, guard end ID)");
  SPARK_TRY(BudgetSpec spec, parse_budget(o.budget));
  GuardOptions opt = o;
  if (!opt.on_oom.empty()) {
    auto exe = resolve_executable(opt.on_oom[0]);
    if (!exe) return with_context(exe.error(), "--on-oom");
    opt.on_oom[0] = *exe;
  }
  std::optional<PortAddress> port;
  if (!opt.until_port.empty()) {
    SPARK_TRY(PortAddress a, parse_port_address(opt.until_port));
    port = a;
  }
  if (opt.restart_max < 1) return input_error("--restart-max must be at least 1");
  if (opt.settle_on_ready && !port)
    return input_error("settling when the server is ready needs --until-port HOST:PORT");
  if (opt.restart && opt.pid <= 0) return input_error("--restart needs --pid (a command to restart)");
  if (opt.memory_high && opt.memory_max && *opt.memory_high > *opt.memory_max)
    return input_error("--memory-high must not be above --memory-max");
  SPARK_TRY(MemoryHierarchy h, hierarchy());
  SPARK_TRY(MemInfo host, read_meminfo(paths_));
  uint64_t budget = resolve_budget(spec, host);
  if (budget > host.total())
    return input_error("--budget " + describe_budget(spec) + " = " + format_size(budget) +
                       " is above the host's RAM (" + format_size(host.total()) + "): give a smaller budget");
  for (auto v : {opt.memory_high, opt.memory_max})
    if (v && *v > host.total())
      return input_error("--memory-high/--memory-max " + format_size(*v) + " is above the host's RAM (" +
                         format_size(host.total()) + ")");

  SPARK_TRY(auto existing, list_guards(paths_));
  GuardState st;
  st.opt = opt;
  st.budget = budget;
  SPARK_TRY(st.host_floor, resolve_host_floor(paths_, opt.host_floor, host));
  st.started_ms = unix_ms();
  Fd pidfd;
  if (opt.pid > 0) {
    if (!process_alive(paths_, opt.pid))
      return sys_error(ESRCH, "process " + std::to_string(opt.pid) + " does not exist");
    SPARK_TRY(pidfd, open_pidfd(opt.pid));
    SPARK_TRY(std::string cur, memory_cgroup_of(paths_, h, opt.pid));
    std::string base = fs::path(cur).filename().string();
    if (base.rfind(k_box_prefix, 0) == 0)
      return input_error("process " + std::to_string(opt.pid) + " is already guarded (cgroup " + cur + ")");
    for (const auto& g : existing)
      if (g.pid == opt.pid) return input_error("process " + std::to_string(opt.pid) + " is already guarded by " + g.id);
    uint64_t rss = process_rss(paths_, opt.pid);
    for (auto v : {opt.memory_high, opt.memory_max})
      if (v && *v < rss && !opt.force)
        return input_error("--memory-max/--memory-high " + format_size(*v) + " is below what process " +
                           std::to_string(opt.pid) + " already uses (" + format_size(rss) +
                           "): it would be killed at once; raise it or pass --force");
    if (rss + budget > host.total() && !opt.force)
      return input_error("footprint " + format_size(rss) + " + budget " + format_size(budget) +
                         " is above the host's RAM (" + format_size(host.total()) + "): give a smaller --budget");
    if (opt.restart || !opt.command.empty()) {
      SPARK_TRY(st.launch, launch_of(paths_, opt.pid, opt.command));
    }
    std::string parent = opt.parent;
    if (parent.empty()) {
      SPARK_TRY(parent, memory_cgroup_of(paths_, h, 0));
      // v2 (where no systemd scope is asked for below): a cgroup that enables memory for children.
      if (h.version == CgroupVersion::v2 && !systemd_booted(paths_)) {
        SPARK_TRY(parent, v2_box_parent(paths_, h, parent));
      }
    }
    if (auto lost = lost_memory_limit(h, cur, parent); lost && !opt.force)
      return input_error("process " + std::to_string(opt.pid) + " is in a memory cgroup with a limit of its own, " +
                         *lost +
                         ": a guard's box beside it would lift that limit. Guard that cgroup in place "
                         "(--cgroup), or pass --force to move the process out of it");
    st.opt.parent = parent;
    st.origin = cur;
    st.pid = opt.pid;
    st.owns_box = true;
  } else {
    CgroupBox b(paths_, h, opt.cgroup);
    if (!b.exists()) return input_error("cgroup " + opt.cgroup + " does not exist under " + h.root.string());
    for (const auto& g : existing)
      if (g.box == opt.cgroup) return input_error("cgroup " + opt.cgroup + " is already guarded by " + g.id);
    st.box = opt.cgroup;
  }
  // The id: one more than the highest in the journal.
  int n = 0;
  for (const auto& g : existing)
    if (g.id.size() > 1 && g.id[0] == 'g') n = std::max(n, std::atoi(g.id.c_str() + 1));
  for (const auto& [id, g] : guards_)
    if (id.size() > 1 && id[0] == 'g') n = std::max(n, std::atoi(id.c_str() + 1));
  n = std::max(n, last_id_);  // never reuse an id this process gave out (a waiter may hold it)
  st.id = "g" + std::to_string(n + 1);
  // Where systemd runs the unified tree it owns the cgroups: the box is a transient scope it makes.
  bool use_scope = st.owns_box && h.version == CgroupVersion::v2 && o.parent.empty() && systemd_booted(paths_);
  if (use_scope) {
    SPARK_TRY(std::string name, scope_unit_name(std::string(k_box_prefix) + st.id));
    SPARK_TRY(std::string now_in,
              scope_with(st.pid, name, "spark-tune guard " + st.id + " (process " + std::to_string(st.pid) + ")"));
    st.box = now_in;
    st.scope = name;
    st.owns_box = false;  // systemd's: collected when its processes are gone
  } else if (st.owns_box) {
    st.box = (st.opt.parent == "/" ? "" : st.opt.parent) + "/" + k_box_prefix + st.id;
  }
  std::string owner = guard_owner(st.id);

  auto g = std::make_unique<Runtime>();
  g->box = std::make_unique<CgroupBox>(paths_, h, st.box);
  g->port = port;
  g->pidfd = std::move(pidfd);

  // 2. The box (journaled first: a crash from here on leaves what removes it).
  ApplyOptions ao;
  ao.owner_state = st.to_json();
  if (st.owns_box) {
    if (g->box->exists()) return input_error("cgroup " + st.box + " already exists: end the guard that made it first");
    auto r = tuner_.apply(owner, {{g->box->dir_target(), std::string(), "guard " + st.id + " box"}}, ao);
    if (!r) return with_context(r.error(), "creating the guard's cgroup");
  } else {
    SPARK_TRY_VOID(tuner_.set_owner_state(owner, st.to_json()));
  }
  auto rollback = [&](const Error& e) -> Error {
    if (st.owns_box || !st.scope.empty()) (void)g->box->move_all_to(tuner_.actuator(), st.origin);
    if (auto r = tuner_.release(owner); !r) log_error("undoing guard " + st.id + ": " + describe(r.error()));
    (void)tuner_.set_owner_state(owner, nullptr);
    return e;
  };
  if (st.owns_box) {
    if (auto r = g->box->attach(tuner_.actuator(), st.pid); !r) {
      if (r.error().code().value() == ESRCH)
        return rollback(
            sys_error(ESRCH, "process " + std::to_string(st.pid) + " exited during set-up; nothing was changed"));
      return rollback(r.error());
    }
    pollfd p{g->pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) == 1 || !process_alive(paths_, st.pid))
      return rollback(
          sys_error(ESRCH, "process " + std::to_string(st.pid) + " exited during set-up; nothing was changed"));
  }
  g->st = st;
  // 3. Limits now, or once the load is done.
  bool defer = st.opt.settle_after.count() > 0 || st.opt.settle_on_ready;
  if (!defer) {
    if (auto r = settle(*g); !r) return rollback(r.error());
  } else {
    Limits early;
    early.high = st.opt.memory_high;
    early.max = st.opt.memory_max;
    if (early.high || early.max) {
      auto r = tuner_.apply(owner, g->box->limit_changes(early, "guard " + st.id + " absolute limit"), {});
      if (!r) return rollback(r.error());
    }
    if (st.opt.settle_on_ready) {
      g->phase = Runtime::Phase::probing;  // settles at the first server_ready
      g->spawned_at = g->next_probe = Clock::now();
    } else {
      g->settle_at = Clock::now() + st.opt.settle_after;
    }
  }
  if (auto r = setup_watch(*g); !r) return rollback(r.error());
  persist(*g);
  std::string id = st.id;
  emit(id, "guard_start",
       {{"pid", g->st.pid},
        {"cgroup", g->st.box},
        {"cgroup_version", h.version == CgroupVersion::v1 ? 1 : 2},
        {"budget", g->st.budget},
        {"budget_spec", describe_budget(spec)},
        {"limit", g->st.limit},
        {"settled", g->st.settled}});
  guards_[id] = std::move(g);
  last_id_ = std::atoi(id.c_str() + 1);
  return id;
}

}  // namespace spark::guard
