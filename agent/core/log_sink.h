// Where the agent's log goes: the journal or stderr.
#pragma once

#include "core/log.h"

namespace spark {

// The sink for a daemon: the journal only when its stderr is the stream systemd connected to the
// journal (JOURNAL_STREAM names that stream's device:inode, as systemd.exec(5) documents); a child
// whose stderr was redirected (a pipe, a file) keeps stderr even though it inherited the variable.
LogSink log_sink_for_stderr(const char* journal_stream, int stderr_fd);

}  // namespace spark
