// One logging front end: stderr for the CLI, the systemd journal with structured fields for the agent.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace spark {

enum class LogLevel { debug, info, notice, warning, error };
enum class LogSink { stderr_text, journal };

using LogFields = std::vector<std::pair<std::string, std::string>>;

void set_log_sink(LogSink sink);
void set_log_level(LogLevel min_level);
// Quiet mode for --json output: only warnings and errors reach stderr.
void log(LogLevel level, const std::string& message, const LogFields& fields = {});

inline void log_debug(const std::string& m, const LogFields& f = {}) { log(LogLevel::debug, m, f); }
inline void log_info(const std::string& m, const LogFields& f = {}) { log(LogLevel::info, m, f); }
inline void log_warning(const std::string& m, const LogFields& f = {}) { log(LogLevel::warning, m, f); }
inline void log_error(const std::string& m, const LogFields& f = {}) { log(LogLevel::error, m, f); }

// Every tuning action: key/target, old and new value, who asked (owner) and why.
void log_change(const std::string& target, const std::string& old_value, const std::string& new_value,
                const std::string& owner, const std::string& reason);

}  // namespace spark
