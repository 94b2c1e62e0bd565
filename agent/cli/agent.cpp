// spark-tune agent: the daemon (daemon/agent.h).
#include "daemon/agent.h"

#include <unistd.h>

#include <cstdlib>

#include "cli/registry.h"
#include "core/log_sink.h"
#include "core/units.h"
#include "daemon/telemetry_service.h"
#include "state/journal.h"

using spark::state::ensure_state_dir;

namespace {

void setup(CLI::App& app, spark::cli::Context& ctx) {
  auto* cmd = app.add_subcommand("agent", "run the agent: owns load windows, serves the CLI on a local socket");
  static bool keep_caps = false;
  cmd->add_flag("--keep-capabilities", keep_caps, "do not drop capabilities after start (debugging)");
  auto& tele = spark::daemon::telemetry_service_options();
  cmd->add_option("--metrics-port", tele.metrics_port,
                  "TCP port of the Prometheus endpoint GET /metrics (default " +
                      std::to_string(spark::daemon::k_default_metrics_port) + ", 0 = off)");
  static std::string metrics_address;
  cmd->add_option("--metrics-address", metrics_address,
                  "address of /metrics (default 127.0.0.1; a non-loopback address exposes host telemetry)");
  cmd->add_flag("!--no-bpf", tele.use_bpf, "telemetry from procfs only: do not load eBPF probes");
  // The control connections' idle timeout and unread-reply deadline (docs/cli.md "Limits"): hidden,
  // for tests that cannot wait the defaults.
  static std::string idle_timeout, send_deadline;
  cmd->add_option("--control-idle-timeout", idle_timeout, "close control connections idle this long (testing)")
      ->group("");
  cmd->add_option("--control-send-deadline", send_deadline,
                  "drop control clients that read no reply this long (testing)")
      ->group("");
  static std::string dear_budget;
  cmd->add_option("--dear-round-budget", dear_budget,
                  "time for window begins and ends in one round of the loop, 0 = one a round (testing)")
      ->group("");
  cmd->callback([&ctx] {
    using namespace spark;
    if (!metrics_address.empty()) {
      auto& t = daemon::telemetry_service_options();
      if (auto a = daemon::parse_listen_address(metrics_address, t.metrics_port); !a) {
        ctx.exit_code = cli::report_error(ctx, a.error().what());
        return;
      }
      t.metrics_address = metrics_address;
      t.metrics_address_explicit = true;
    }
    // Under systemd the journal (structured fields); started by hand, on demand or with stderr
    // redirected (tests, a CLI that spawned it), stderr -- even inside a systemd unit's process tree.
    set_log_sink(log_sink_for_stderr(std::getenv("JOURNAL_STREAM"), STDERR_FILENO));
    if (auto r = ensure_state_dir(ctx.paths); !r) {
      ctx.exit_code = cli::report_error(ctx, describe(r.error()));
      return;
    }
    daemon::AgentOptions opt;
    opt.drop_capabilities = !keep_caps;
    for (auto [text, into] :
         {std::pair{&idle_timeout, &opt.control_idle_timeout}, std::pair{&send_deadline, &opt.control_send_deadline}}) {
      if (text->empty()) continue;
      auto d = parse_duration(*text);
      if (!d || d->count() <= 0) {
        ctx.exit_code = cli::report_error(ctx, "bad duration '" + *text + "' (e.g. 2s, 300ms)");
        return;
      }
      *into = *d;
    }
    if (!dear_budget.empty()) {
      auto d = parse_duration(dear_budget);
      if (!d || d->count() < 0) {
        ctx.exit_code = cli::report_error(ctx, "bad duration '" + dear_budget + "' (e.g. 5ms, 0ms)");
        return;
      }
      opt.dear_round_budget = *d;
    }
    daemon::Agent agent(ctx.paths, opt);
    ctx.exit_code = agent.run();
  });
}

const spark::cli::Verb k_verb{"agent", 90, setup};

}  // namespace
