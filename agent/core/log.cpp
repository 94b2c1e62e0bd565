#include "core/log_sink.h"

#include <sys/stat.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <mutex>

namespace spark {

namespace {
std::atomic<LogSink> g_sink{LogSink::stderr_text};
std::atomic<LogLevel> g_level{LogLevel::info};
std::mutex g_mutex;

int syslog_priority(LogLevel l) {
  switch (l) {
    case LogLevel::debug:
      return LOG_DEBUG;
    case LogLevel::info:
      return LOG_INFO;
    case LogLevel::notice:
      return LOG_NOTICE;
    case LogLevel::warning:
      return LOG_WARNING;
    case LogLevel::error:
      return LOG_ERR;
  }
  return LOG_INFO;
}

const char* prefix(LogLevel l) {
  switch (l) {
    case LogLevel::warning:
      return "warning: ";
    case LogLevel::error:
      return "error: ";
    default:
      return "";
  }
}
}  // namespace

void set_log_sink(LogSink sink) { g_sink = sink; }

LogSink log_sink_for_stderr(const char* journal_stream, int stderr_fd) {
  if (!journal_stream || !*journal_stream) return LogSink::stderr_text;
  uintmax_t dev = 0, ino = 0;
  char rest = 0;
  if (std::sscanf(journal_stream, "%" SCNuMAX ":%" SCNuMAX "%c", &dev, &ino, &rest) != 2) return LogSink::stderr_text;
  struct stat st {};
  if (::fstat(stderr_fd, &st) != 0) return LogSink::stderr_text;
  return static_cast<uintmax_t>(st.st_dev) == dev && static_cast<uintmax_t>(st.st_ino) == ino ? LogSink::journal
                                                                                              : LogSink::stderr_text;
}
void set_log_level(LogLevel min_level) { g_level = min_level; }

void log(LogLevel level, const std::string& message, const LogFields& fields) {
  if (level < g_level.load()) return;
  if (g_sink.load() == LogSink::journal) {
    std::vector<std::string> items;
    items.reserve(fields.size() + 3);
    items.push_back("MESSAGE=" + message);
    items.push_back("PRIORITY=" + std::to_string(syslog_priority(level)));
    items.push_back("SYSLOG_IDENTIFIER=spark-tune");
    for (const auto& [k, v] : fields) items.push_back("SPARK_" + k + "=" + v);
    std::vector<iovec> iov;
    iov.reserve(items.size());
    for (auto& s : items) iov.push_back({s.data(), s.size()});
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0) return;
    // No journal socket (not under systemd): fall through to stderr.
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "%s%s\n", prefix(level), message.c_str());
}

void log_change(const std::string& target, const std::string& old_value, const std::string& new_value,
                const std::string& owner, const std::string& reason) {
  log(LogLevel::info, target + ": " + old_value + " -> " + new_value + " (" + owner + ", " + reason + ")",
      {{"TARGET", target}, {"OLD", old_value}, {"NEW", new_value}, {"OWNER", owner}, {"REASON", reason}});
}

}  // namespace spark
