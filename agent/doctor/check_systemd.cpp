// doctor's systemd check: what the host's init gives spark-tune, and what does not work without it.
// Installing the package never fails without systemd (a container, a chroot, another init); this
// says what that costs.
#include "doctor/doctor.h"

namespace spark::doctor {

std::vector<Finding> check_systemd(const Env& env) {
  std::vector<Finding> out;
  auto add = [&](Status s, std::string m, std::string fix = "") {
    out.push_back({"systemd", s, std::move(m), std::move(fix)});
  };
  const fs::path& root = env.paths.host_root;
  std::error_code ec;
  // sd_booted()'s test, through HostPaths (the same as guard/systemd_scope.cpp).
  bool booted = fs::is_directory(env.paths.run.parent_path() / "systemd/system", ec);
  if (!booted) {
    add(Status::warn,
        "systemd is not PID 1 (a container, a chroot or another init): no socket activation -- the CLI starts "
        "the agent itself when it needs one, and nothing starts it again after a crash or a reboot; guards use "
        "spark-tune's own cgroup, not a transient scope; `protect` drop-ins and `apply --persist` need systemd "
        "(systemd-sysctl) to take effect at boot",
        "run `spark-tune agent` under this host's supervisor if windows and guards must outlive a CLI call");
    return out;
  }
  fs::path unit;
  for (const char* dir :
       {"etc/systemd/system", "usr/local/lib/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"}) {
    if (fs::exists(root / dir / "spark-tune.socket", ec)) {
      unit = root / dir / "spark-tune.socket";
      break;
    }
  }
  if (unit.empty()) {
    add(Status::warn,
        "systemd runs but spark-tune.socket is not installed: the CLI starts the agent itself, and nothing "
        "starts it again after a crash or a reboot",
        "install the package (apt install ./spark-tune_VERSION_ARCH.deb), or copy install/spark-tune.socket "
        "and install/spark-tune.service to /etc/systemd/system and run systemctl enable --now spark-tune.socket");
    return out;
  }
  bool enabled = fs::exists(root / "etc/systemd/system/sockets.target.wants/spark-tune.socket", ec) ||
                 fs::is_symlink(root / "etc/systemd/system/sockets.target.wants/spark-tune.socket", ec);
  if (!enabled) {
    add(Status::warn,
        "spark-tune.socket (" + unit.string() +
            ") is installed but not enabled: the agent is not "
            "reachable after a reboot until a CLI call starts one",
        "systemctl enable --now spark-tune.socket");
    return out;
  }
  add(Status::ok,
      "systemd is PID 1 and spark-tune.socket is enabled: socket activation, transient scopes "
      "for guards, protect drop-ins");
  return out;
}

}  // namespace spark::doctor
