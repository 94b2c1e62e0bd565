#include "cli/report_event.h"

#include <signal.h>

#include <cerrno>
#include <fstream>

#include "daemon/protocol.h"

namespace spark::cli {

// An agent that does not answer this fast is not waited for: the event goes to the journal.
constexpr std::chrono::milliseconds k_report_timeout{1000};

namespace {

// An agent runs now (its pid file names a live process): a socket that systemd would activate is
// not worth starting an agent for.
bool agent_running(const HostPaths& paths) {
  std::ifstream in(daemon::pid_file(paths));
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

}  // namespace

void report_event(const Context& ctx, const Event& e) {
  if (!agent_running(ctx.paths)) {
    (void)journal_event(e);
    return;
  }
  auto r = daemon::call(ctx.paths, "events.emit", nlohmann::json{{"event", e.to_json()}}, k_report_timeout);
  if (r) return;
  (void)journal_event(e);
}

}  // namespace spark::cli
