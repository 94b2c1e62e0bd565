#include "daemon/privileges.h"

#include <sys/capability.h>
#include <sys/prctl.h>

#include <algorithm>

#include "daemon/protocol.h"

namespace spark::daemon {

Result<void> authorize_peer(const Peer& peer, const std::vector<gid_t>& groups, std::optional<gid_t> allowed_group) {
  if (peer.uid == 0) return {};
  if (allowed_group &&
      (peer.gid == *allowed_group || std::find(groups.begin(), groups.end(), *allowed_group) != groups.end()))
    return {};
  return sys_error(
      EACCES, "uid " + std::to_string(peer.uid) + " may not use spark-tune: run as root or join group " + k_group_name);
}

std::vector<std::string> agent_capabilities() {
  return {"cap_dac_override",     // sysfs/procfs/cgroup files, journal under /var/lib
          "cap_dac_read_search",  // open model files of any owner for fadvise/mincore
          "cap_fowner",           // MADV_PAGEOUT of file pages the agent does not own
          "cap_sys_ptrace",       // /proc/PID/maps, smaps, pidfd of other users' processes
          "cap_sys_nice",         // process_madvise
          "cap_sys_admin",        // some sysctls, cgroup setup
          "cap_sys_resource",     // sysctls that raise limits
          "cap_kill",             // the guard's actions on servers
          "cap_setuid",           // the guard restarts a server as the user it ran as
          "cap_setgid",
          "cap_chown",  // socket group at restart
          "cap_bpf",    // telemetry probes
          "cap_perfmon"};
}

Result<void> drop_capabilities(const std::vector<std::string>& keep) {
  std::vector<cap_value_t> values;
  for (const auto& name : keep) {
    cap_value_t v;
    if (cap_from_name(name.c_str(), &v) != 0) return input_error("unknown capability " + name);
    values.push_back(v);
  }
  // Only what the process has now can be kept (a container may have withheld some).
  if (cap_t now = cap_get_proc()) {
    values.erase(std::remove_if(values.begin(), values.end(),
                                [&](cap_value_t v) {
                                  cap_flag_value_t f = CAP_CLEAR;
                                  return cap_get_flag(now, v, CAP_PERMITTED, &f) != 0 || f != CAP_SET;
                                }),
                 values.end());
    cap_free(now);
  }
  // Bounding set first, while CAP_SETPCAP is still held; without it (systemd's
  // CapabilityBoundingSet already bounds the service) this is skipped.
  for (cap_value_t c = 0; c <= CAP_LAST_CAP; ++c) {
    if (std::find(values.begin(), values.end(), c) != values.end()) continue;
    if (::prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1 && ::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0) break;
  }
  cap_t caps = cap_init();
  if (!caps) return errno_error("cap_init");
  if (!values.empty() &&
      (cap_set_flag(caps, CAP_PERMITTED, static_cast<int>(values.size()), values.data(), CAP_SET) != 0 ||
       cap_set_flag(caps, CAP_EFFECTIVE, static_cast<int>(values.size()), values.data(), CAP_SET) != 0)) {
    cap_free(caps);
    return errno_error("cap_set_flag");
  }
  int rc = cap_set_proc(caps);
  int err = errno;
  cap_free(caps);
  if (rc != 0) return sys_error(err, "dropping capabilities");
  // Nothing gained through exec; the agent never runs a shell anyway.
  ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  return {};
}

}  // namespace spark::daemon
