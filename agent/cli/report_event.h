// Events of verbs that run in the CLI process (apply, revert): told to the running agent, which
// puts them in its event log (spark-tune events, /metrics, the journal); without an agent they go to
// the journal only (SPARK_TUNE_EVENT_* fields, seq 0: no log numbered them).
#pragma once

#include "cli/registry.h"
#include "core/event.h"

namespace spark::cli {

void report_event(const Context& ctx, const Event& e);

}  // namespace spark::cli
