#include "guard/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "core/fs.h"
#include "core/log.h"
#include "core/units.h"
#include "tune/trigger.h"

using spark::state::Target, spark::state::TargetKind;

using spark::tune::Actuator, spark::tune::Change, spark::tune::Trigger, spark::tune::cgroup_attach_trigger,
    spark::tune::cgroup_event_trigger, spark::tune::cgroup_kill_trigger, spark::tune::fire, spark::tune::resolve_target;

namespace spark::guard {

namespace {

constexpr uint64_t k_page = 4096;

bool parse_u64(const std::string& s, uint64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0') return false;
  out = v;
  return true;
}

}  // namespace

uint64_t page_round(uint64_t bytes) { return bytes / k_page * k_page; }

std::optional<uint64_t> stat_value(const std::string& text, const std::string& key) {
  for (const auto& line : split_lines(text)) {
    auto sp = line.find(' ');
    if (sp == std::string::npos || line.compare(0, sp, key) != 0 || sp != key.size()) continue;
    uint64_t v = 0;
    if (parse_u64(trim(line.substr(sp + 1)), v)) return v;
  }
  return std::nullopt;
}

Result<MemoryEvents> parse_memory_events(const std::string& text) {
  MemoryEvents e;
  for (const auto& line : split_lines(text)) {
    std::string l = trim(line);
    if (l.empty()) continue;
    auto sp = l.find(' ');
    uint64_t v = 0;
    if (sp == std::string::npos || !parse_u64(trim(l.substr(sp + 1)), v))
      return input_error("memory.events: unreadable line '" + l + "'");
    std::string k = l.substr(0, sp);
    if (k == "low")
      e.low = v;
    else if (k == "high")
      e.high = v;
    else if (k == "max")
      e.max = v;
    else if (k == "oom")
      e.oom = v;
    else if (k == "oom_kill")
      e.oom_kill = v;
    else if (k == "oom_group_kill")
      e.oom_group_kill = v;
  }
  return e;
}

Result<std::string> v2_box_parent(const HostPaths& paths, const MemoryHierarchy& h, const std::string& own) {
  std::string cur = own.empty() ? "/" : own;
  for (;;) {
    CgroupBox c(paths, h, cur);
    if (auto sc = read_file(c.file("cgroup.subtree_control")); sc.ok()) {
      std::istringstream in(*sc);
      std::string w;
      while (in >> w)
        if (w == "memory") return cur;
    }
    if (cur == "/") break;
    auto up = fs::path(cur).parent_path().string();
    cur = up.empty() ? "/" : up;
  }
  return sys_error(ENOTSUP,
                   "no cgroup from " + own +
                       " up to the root enables the memory controller for its children "
                       "(cgroup.subtree_control): run spark-tune under systemd (a transient scope is used), in a "
                       "unit with Delegate=yes, or in a leaf below a cgroup whose cgroup.subtree_control has memory");
}

CgroupBox::CgroupBox(HostPaths paths, MemoryHierarchy h, std::string path)
    : paths_(std::move(paths)), h_(std::move(h)), path_(std::move(path)) {}

fs::path CgroupBox::dir() const {
  std::string rel = path_;
  while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
  return rel.empty() ? h_.root : h_.root / rel;
}

Target CgroupBox::dir_target() const { return {TargetKind::dir, dir().string()}; }

std::string CgroupBox::target_name() const {
  std::string rel = path_;
  while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
  if (h_.prefix.empty()) return rel;
  return rel.empty() ? h_.prefix : h_.prefix + "/" + rel;
}

Target CgroupBox::file_target(const std::string& name) const {
  std::string n = target_name();
  return {TargetKind::cgroup, n.empty() ? name : n + "/" + name};
}

bool CgroupBox::exists() const {
  std::error_code ec;
  return fs::is_directory(dir(), ec);
}

std::vector<Change> CgroupBox::limit_changes(const Limits& l, const std::string& reason) const {
  std::vector<Change> out;
  if (h_.version == CgroupVersion::v1) {
    if (l.max) out.push_back({file_target("memory.limit_in_bytes"), std::to_string(page_round(*l.max)), reason});
    if (l.high) out.push_back({file_target("memory.soft_limit_in_bytes"), std::to_string(page_round(*l.high)), reason});
  } else {
    if (l.high) out.push_back({file_target("memory.high"), std::to_string(page_round(*l.high)), reason});
    if (l.max) out.push_back({file_target("memory.max"), std::to_string(page_round(*l.max)), reason});
    if (l.oom_group) out.push_back({file_target("memory.oom.group"), "1", reason + " (kill the box as one)"});
  }
  return out;
}

Result<void> CgroupBox::attach(Actuator& act, pid_t pid) const {
  auto r = fire(act, cgroup_attach_trigger(target_name(), pid, "guard box " + path_));
  if (!r) {
    if (r.error().code().value() == ESRCH) return sys_error(ESRCH, "process " + std::to_string(pid) + " exited");
    return with_context(r.error(), "moving process " + std::to_string(pid) + " into " + path_);
  }
  return {};
}

Result<std::vector<pid_t>> CgroupBox::procs() const {
  SPARK_TRY(std::string text, read_file(file("cgroup.procs")));
  std::vector<pid_t> out;
  for (const auto& line : split_lines(text)) {
    uint64_t v = 0;
    if (parse_u64(trim(line), v)) out.push_back(static_cast<pid_t>(v));
  }
  return out;
}

Result<MemoryStats> CgroupBox::stats() const {
  MemoryStats s;
  SPARK_TRY(std::string stat, read_file(file("memory.stat")));
  if (h_.version == CgroupVersion::v1) {
    SPARK_TRY(std::string usage, read_value(file("memory.usage_in_bytes")));
    parse_u64(usage, s.usage);
    s.anon = stat_value(stat, "total_rss").value_or(stat_value(stat, "rss").value_or(0));
    s.file = stat_value(stat, "total_cache").value_or(stat_value(stat, "cache").value_or(0));
    if (auto p = read_value(file("memory.max_usage_in_bytes")); p.ok()) parse_u64(*p, s.peak);
    SPARK_TRY(std::string oc, read_file(file("memory.oom_control")));
    s.oom = stat_value(oc, "under_oom").value_or(0);
    s.oom_kills = stat_value(oc, "oom_kill").value_or(0);
  } else {
    SPARK_TRY(std::string cur, read_value(file("memory.current")));
    parse_u64(cur, s.usage);
    s.anon = stat_value(stat, "anon").value_or(0);
    s.file = stat_value(stat, "file").value_or(0);
    if (auto p = read_value(file("memory.peak")); p.ok()) parse_u64(*p, s.peak);
    SPARK_TRY(std::string ev, read_file(file("memory.events")));
    SPARK_TRY(MemoryEvents e, parse_memory_events(ev));
    s.oom = e.oom;
    s.oom_kills = e.oom_kill;
    s.oom_group_kills = e.oom_group_kill;
    s.high_events = e.high;
  }
  return s;
}

Result<void> CgroupBox::kill_all(Actuator& act) const {
  std::error_code ec;
  Trigger kill = cgroup_kill_trigger(target_name(), "guard box " + path_);
  auto kill_file = resolve_target(paths_, kill.target);
  if (h_.version == CgroupVersion::v2 && kill_file.ok() && fs::exists(*kill_file, ec)) {
    auto r = fire(act, kill);
    if (r.ok()) return {};
    log_warning("cgroup.kill of " + path_ + " failed (" + describe(r.error()) + "): killing each member");
  }
  // v1: no cgroup.kill; a member may fork while we kill, so repeat until the box is empty.
  for (int round = 0; round < 20; ++round) {
    SPARK_TRY(auto pids, procs());
    if (pids.empty()) return {};
    for (pid_t p : pids) ::kill(p, SIGKILL);
    ::usleep(2000);
  }
  return sys_error(EBUSY, "processes in " + path_ + " survive SIGKILL");
}

Result<void> CgroupBox::move_all_to(Actuator& act, const std::string& other_path) const {
  CgroupBox other(paths_, h_, other_path);
  // Each member is moved once; a member forked meanwhile shows up in the next round.
  std::vector<pid_t> moved;
  for (int round = 0; round < 20; ++round) {
    SPARK_TRY(auto pids, procs());
    bool any = false;
    for (pid_t p : pids) {
      if (std::find(moved.begin(), moved.end(), p) != moved.end()) continue;
      any = true;
      auto r = other.attach(act, p);
      if (!r && r.error().code().value() != ESRCH) return with_context(r.error(), "leaving " + path_);
      moved.push_back(p);
    }
    if (!any) return {};
  }
  return sys_error(EBUSY, "processes keep appearing in " + path_);
}

Result<Fd> register_v1_event(Actuator& act, const CgroupBox& box, const std::string& control_file,
                             const std::string& args) {
  Fd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!efd.valid()) return errno_error("eventfd");
  fs::path cf = box.file(control_file);
  Fd cfd(::open(cf.c_str(), O_RDONLY | O_CLOEXEC));
  if (!cfd.valid()) return errno_error("opening " + cf.string());
  std::string line = std::to_string(efd.get()) + " " + std::to_string(cfd.get());
  if (!args.empty()) line += " " + args;
  auto r = fire(act, cgroup_event_trigger(box.target_name(), line, "guard box " + box.path(),
                                          "notify on " + control_file + (args.empty() ? "" : " " + args)));
  if (!r) return with_context(r.error(), "registering for " + control_file + " events");
  // The kernel holds its own reference to the control file; the eventfd is what we poll.
  return efd;
}

uint64_t drain_eventfd(int fd) {
  uint64_t total = 0, v = 0;
  while (::read(fd, &v, sizeof v) == sizeof v) total += v;
  return total;
}

Result<Fd> open_events_watch(const CgroupBox& box) {
  fs::path p = box.file("memory.events");
  Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_error("opening " + p.string());
  char buf[512];
  (void)!::read(fd.get(), buf, sizeof buf);  // arm: kernfs notifies readers that have read once
  return fd;
}

std::optional<std::string> lost_memory_limit(const MemoryHierarchy& h, const std::string& cur,
                                             const std::string& parent) {
  auto within = [](const std::string& a, const std::string& b) {  // a is b or below b
    if (b == "/" || a == b) return true;
    return a.size() > b.size() && a.compare(0, b.size(), b) == 0 && a[b.size()] == '/';
  };
  for (fs::path c = cur; !c.empty() && c != "/"; c = c.parent_path()) {
    std::string cs = c.string();
    if (within(parent, cs)) break;  // `parent` lies inside it: the box keeps this limit
    fs::path dir = h.root / cs.substr(1);
    if (h.version == CgroupVersion::v2) {
      auto v = read_value(dir / "memory.max");
      if (v && *v != "max") {
        uint64_t bytes = std::strtoull(v->c_str(), nullptr, 10);
        return cs + " (memory.max " + format_size(bytes) + ")";
      }
    } else {
      auto v = read_value(dir / "memory.limit_in_bytes");
      if (v) {
        uint64_t bytes = std::strtoull(v->c_str(), nullptr, 10);
        if (bytes < (uint64_t{1} << 62)) return cs + " (memory.limit_in_bytes " + format_size(bytes) + ")";
      }
    }
  }
  return std::nullopt;
}

}  // namespace spark::guard
