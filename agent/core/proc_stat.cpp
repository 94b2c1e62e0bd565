#include "core/proc_stat.h"

#include <cerrno>
#include <charconv>
#include <sstream>

#include "core/fs.h"

namespace spark {

namespace {

template <typename T>
bool parse_number(const std::string& s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

bool ProcStat::finished() const { return state == 'Z' || state == 'X' || (flags & k_pf_exiting) != 0; }

Result<ProcStat> parse_proc_stat(const std::string& text) {
  // "pid (comm) state ppid pgrp session tty_nr tpgid flags ... starttime(22) ...". comm may hold
  // blanks and parentheses: it ends at the last ')'.
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open)
    return input_error("stat line without '(comm)': '" + text.substr(0, 64) + "'");
  ProcStat st;
  if (!parse_number(trim(text.substr(0, open)), st.pid)) return input_error("stat line without a pid");
  st.comm = text.substr(open + 1, close - open - 1);
  std::istringstream in(text.substr(close + 1));
  std::string field;
  // Fields after the comm, numbered as in proc(5): 3 state, 4 ppid, 9 flags, 22 starttime.
  for (int i = 3; i <= 22; ++i) {
    if (!(in >> field)) {
      if (i <= 3) return input_error("stat line of " + std::to_string(st.pid) + " is short");
      break;  // a fixture may stop early: what was read is kept
    }
    if (i == 3) {
      if (field.size() != 1) return input_error("stat line of " + std::to_string(st.pid) + ": state '" + field + "'");
      st.state = field[0];
    } else if (i == 4) {
      (void)parse_number(field, st.ppid);
    } else if (i == 9) {
      (void)parse_number(field, st.flags);
    } else if (i == 22) {
      (void)parse_number(field, st.start_time);
    }
  }
  return st;
}

Result<ProcStat> read_proc_stat(const HostPaths& paths, pid_t pid) {
  auto file = paths.proc / std::to_string(pid) / "stat";
  auto text = read_file(file);
  if (!text) {
    int err = text.error().code().value();
    if (err == ENOENT || err == ESRCH) return sys_error(ESRCH, "process " + std::to_string(pid) + " does not exist");
    return text.error();
  }
  auto st = parse_proc_stat(*text);
  if (!st) return with_context(st.error(), file.string());
  return st;
}

bool process_alive(const HostPaths& paths, pid_t pid, std::optional<uint64_t> start_time) {
  auto st = read_proc_stat(paths, pid);
  if (!st || st->finished()) return false;
  return !start_time || st->start_time == *start_time;
}

}  // namespace spark
