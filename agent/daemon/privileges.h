// What the agent lets in and what it keeps: who may use the control socket, and the capabilities
// the agent holds after start.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "daemon/service.h"

namespace spark::daemon {

// Whether a peer may talk to the agent: root, or the group (primary or supplementary).
// `groups` are the peer's supplementary groups (SO_PEERGROUPS).
Result<void> authorize_peer(const Peer& peer, const std::vector<gid_t>& groups, std::optional<gid_t> allowed_group);

// Capabilities the agent keeps after start (everything else is dropped from all sets and from the
// bounding set): file access to model files and sysfs/procfs, other processes' maps and
// process_madvise, cgroup and kill for the guard.
std::vector<std::string> agent_capabilities();
Result<void> drop_capabilities(const std::vector<std::string>& keep);

}  // namespace spark::daemon
