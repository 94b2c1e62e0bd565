#include "cli/guard_wait.h"

#include <unistd.h>

#include <iostream>

#include "core/units.h"
#include "daemon/protocol.h"

namespace spark::cli {

// Waits for a guard event from the agent (server_ready after a restart, oom_kill...): exit 0 with
// the event on stdout, 1 when the timeout passes first.
int wait_guard_event(Context& ctx, const std::string& type, const std::string& guard,
                     std::chrono::milliseconds timeout) {
  auto first = daemon::call(ctx.paths, "guard.events", nlohmann::json{{"since", ~uint64_t{0} >> 1}});
  if (!first) return report_error(ctx, "no agent answers (" + describe(first.error()) + "): guards run in the agent");
  uint64_t cursor = first->value("cursor", uint64_t{0});
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    auto r = daemon::call(ctx.paths, "guard.events",
                          nlohmann::json{{"since", cursor}, {"guard", guard}, {"type", type}});
    if (!r) return report_error(ctx, describe(r.error()));
    cursor = r->value("cursor", cursor);
    if (!(*r)["events"].empty()) {
      print_json((*r)["events"][0]);
      return k_exit_ok;
    }
    ::usleep(20000);
  }
  if (!ctx.json) std::cerr << "spark-tune: no " << type << " within " << format_duration(timeout) << std::endl;
  return k_exit_check;
}

}  // namespace spark::cli
