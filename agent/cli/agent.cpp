// spark-tune agent: the daemon (daemon/agent.h).
#include <cstdlib>

#include "cli/registry.h"
#include "core/log.h"
#include "daemon/agent.h"
#include "state/journal.h"

namespace {

void setup(CLI::App& app, spark::cli::Context& ctx) {
  auto* cmd = app.add_subcommand("agent", "run the agent: owns load windows, serves the CLI on a local socket");
  static bool keep_caps = false;
  cmd->add_flag("--keep-capabilities", keep_caps, "do not drop capabilities after start (debugging)");
  cmd->callback([&ctx] {
    using namespace spark;
    // Under systemd the journal (structured fields); started by hand or on demand, stderr.
    if (std::getenv("INVOCATION_ID") || std::getenv("JOURNAL_STREAM")) set_log_sink(LogSink::journal);
    if (auto r = ensure_state_dir(ctx.paths); !r) {
      ctx.exit_code = cli::report_error(ctx, describe(r.error()));
      return;
    }
    daemon::AgentOptions opt;
    opt.drop_capabilities = !keep_caps;
    daemon::Agent agent(ctx.paths, opt);
    ctx.exit_code = agent.run();
  });
}

const spark::cli::Verb verb{"agent", 90, setup};

}  // namespace
