#!/bin/bash
# Runs inside the guest (systemd PID 1, cgroup v2), one stage per boot, started by vmtest.service
# from the transfer disk (/vmtest).  Writes /vmtest/out/results.txt: PASS/FAIL/SKIP NAME[: why]
# and DONE at the end; /vmtest/out/stage is the stage reached (the harness reports it on a hang).
set -u
V=/vmtest
OUT=$V/out
# shellcheck source=/dev/null
. "$V/guest/env"
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER= PAGER=cat
LOG=$OUT/guest.log
exec >>"$LOG" 2>&1
stage=$(cat "$OUT/next" 2>/dev/null || echo boot1)

con() { echo "[vmtest] $*" >/dev/console; echo "[vmtest] $*"; }
mark() { echo "$stage/$1" >"$OUT/stage"; sync; con "stage $stage/$1 ($(cut -d' ' -f1 /proc/uptime) s since boot)"; }
record() { echo "$*" >>"$OUT/results.txt"; sync; con "$*"; }
pass() { record "PASS $1"; }
fail() { record "FAIL $1${2:+: $2}"; }
skip() { record "SKIP $1: $2"; }
check() {  # check NAME CMD... : PASS when CMD exits 0
  local name=$1; shift
  echo "--- check $name: $*"
  if "$@"; then pass "$name"; else fail "$name" "exit $? from: $*"; fi
}
kver_ge() {  # kver_ge 6 5: the running kernel is at least 6.5
  local maj min
  IFS=. read -r maj min _ <<<"$(uname -r)"
  [ "$maj" -gt "$1" ] || { [ "$maj" -eq "$1" ] && [ "$min" -ge "$2" ]; }
}
st() { echo "+ spark-tune $*" >&2; spark-tune "$@"; }

# The values spark-tune may change: every key of the shipped profiles, and THP.
profile_keys() {
  for p in dgx-spark load-window gpu-workstation; do
    spark-tune --json profile show "$p" 2>/dev/null | jq -r '.settings[].key'
  done | grep -E '^(vm|kernel|fs|net)\.' | sort -u
}
snapshot() {  # snapshot FILE: sysctl values of the keys in $OUT/keys, and THP
  : >"$1"
  while read -r k; do echo "$k = $(sysctl -n "$k" 2>&1)" >>"$1"; done <"$OUT/keys"
  for f in enabled defrag; do echo "thp.$f = $(cat /sys/kernel/mm/transparent_hugepage/$f 2>&1)" >>"$1"; done
}
same_as() {  # same_as FILE: the current values equal those in FILE (prints the differences)
  local now; now=$(mktemp); snapshot "$now"
  if diff -u "$1" "$now"; then rm -f "$now"; return 0; fi
  rm -f "$now"; return 1
}
profile_in_force() {  # profile_in_force NAME: sysctl reads back every value of the profile
  local bad=0 k v now
  while read -r k v; do
    now=$(sysctl -n "$k" | tr -s '\t ' ' ')
    if [ "$now" != "$v" ]; then echo "$k: sysctl says '$now', profile wants '$v'"; bad=1; fi
  done < <(jq -r '.settings[] | select(.key | test("^(vm|kernel|fs|net)\\.")) | "\(.key) \(.value)"' "$OUT/profile-$1.json")
  return $bad
}
next_boot() {  # next_boot STAGE: the next boot runs STAGE
  echo "$1" >"$OUT/next"; sync
  con "rebooting into stage $1"
  journalctl --sync
  systemctl reboot
  exit 0
}
finish() {
  journalctl -b -o short-monotonic --no-pager >"$OUT/journal-$stage.txt" 2>&1
  echo "DONE $(date +%s)" >>"$OUT/results.txt"; sync
  con "all stages done"
  systemctl poweroff
  exit 0
}
trap 'journalctl -b -o short-monotonic --no-pager >"$OUT/journal-$stage.txt" 2>&1; sync' EXIT

con "stage $stage: $(uname -srm), $(systemctl --version | head -n 1), guest $guest"
# The tests make memory cgroups of their own under this unit and OOM-kill hogs in them. systemd's
# default OOMPolicy=stop would stop this unit (and the test script with it) at the first such kill,
# leaving an idle guest: the memory.events of a unit count its children's kills. A runtime drop-in
# (gone at the next boot; written again by each stage) keeps the unit running.
mkdir -p /run/systemd/system/vmtest.service.d
# Delegate=yes too: the tests enable the memory controller for children of the unit's cgroup, and
# without delegation systemd resets the unit's cgroup.subtree_control when it realizes cgroups
# again (a transient scope started, a reload): later memcg children then had no memory.max.
printf '[Service]\nOOMPolicy=continue\nDelegate=yes\n' >/run/systemd/system/vmtest.service.d/oom-policy.conf
systemctl daemon-reload
[ "$(systemctl show -p OOMPolicy --value vmtest.service)" = continue ] || con "warning: vmtest.service OOMPolicy is $(systemctl show -p OOMPolicy --value vmtest.service)"
journalctl -b -o short-monotonic --no-pager -n 0 >/dev/null

# A script of the harness's caller instead of the stages (SPARK_TUNE_VM_SCRIPT).
if [ -f "$V/guest/custom.sh" ]; then
  stage=custom
  mark custom
  . "$V/guest/custom.sh"
  finish
fi

# ---------------------------------------------------------------------------------------------------
if [ "$stage" = boot1 ]; then
  mark host
  [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && pass "host: cgroup v2 unified at /sys/fs/cgroup" ||
    fail "host: cgroup v2 unified" "$(stat -fc %T /sys/fs/cgroup)"
  [ "$(ps -p 1 -o comm=)" = systemd ] && pass "host: systemd is PID 1" || fail "host: systemd is PID 1"

  # What the kernel says before the package is installed.  The key list comes from the package's
  # own profiles: unpack them without installing.
  mkdir -p /tmp/deb && dpkg-deb -x "$V"/pkg/spark-tune_*.deb /tmp/deb
  for p in dgx-spark load-window gpu-workstation; do
    SPARK_TUNE_POLICY_DIR=/tmp/deb/usr/share/spark-tune/policies /tmp/deb/usr/bin/spark-tune --json profile show "$p" | jq -r '.settings[].key'
  done | grep -E '^(vm|kernel|fs|net)\.' | sort -u >"$OUT/keys"
  [ -s "$OUT/keys" ] || fail "baseline: keys of the shipped profiles" "none read from the package"
  snapshot "$OUT/baseline.txt"
  cat "$OUT/baseline.txt"

  mark install
  if DEBIAN_FRONTEND=noninteractive apt-get install -y "$V"/pkg/spark-tune_*.deb; then
    pass "install: apt-get install ./$(basename "$V"/pkg/spark-tune_*.deb)"
  else
    fail "install: apt-get install" "see guest.log"; finish
  fi
  [ "$(systemctl is-enabled spark-tune.socket)" = enabled ] && pass "install: spark-tune.socket enabled" ||
    fail "install: spark-tune.socket enabled" "$(systemctl is-enabled spark-tune.socket 2>&1)"

  mark socket
  systemctl stop spark-tune.service 2>/dev/null
  check "socket: systemctl start spark-tune.socket" systemctl start spark-tune.socket
  [ "$(systemctl is-active spark-tune.service)" != active ] && pass "socket: agent not running before the first request" ||
    fail "socket: agent not running before the first request" "spark-tune.service already active"
  check "socket: the CLI reaches the agent (window list)" st window list
  [ "$(systemctl show -p Type --value spark-tune.service)" = notify ] &&
    [ "$(systemctl is-active spark-tune.service)" = active ] &&
    pass "socket: spark-tune.service activated by the socket, Type=notify, active (READY=1 seen)" ||
    fail "socket: service activated" "$(systemctl show -p Type,ActiveState,SubState,Result spark-tune.service | tr '\n' ' ')"
  [ "$(systemctl show -p NRestarts --value spark-tune.service)" = 0 ] && pass "socket: no restarts" ||
    fail "socket: no restarts" "NRestarts=$(systemctl show -p NRestarts --value spark-tune.service)"

  mark doctor
  st doctor; rc=$?
  [ $rc -le 1 ] && pass "doctor: runs (exit $rc)" || fail "doctor" "exit $rc"
  st doctor --json >"$OUT/doctor.json"

  mark apply
  spark-tune --json profile show dgx-spark >"$OUT/profile-dgx-spark.json"
  check "apply dgx-spark" st apply dgx-spark
  check "apply: sysctl reads back every value" profile_in_force dgx-spark
  check "verify: exit 0" st verify
  check "revert" st revert
  check "revert: sysctl reads back the original values" same_as "$OUT/baseline.txt"

  mark window
  . "$V/guest/window.sh"
  mark telemetry
  . "$V/guest/telemetry.sh"
  mark guard
  . "$V/guest/guard.sh"
  mark protect
  . "$V/guest/protect.sh"
  mark journal
  n=$(journalctl -u spark-tune.service -o json --no-pager | jq -s '[.[] | select(.SPARK_WINDOW != null and .SPARK_REASON != null)] | length')
  [ "${n:-0}" -gt 0 ] && pass "journal: window events carry SPARK_WINDOW and SPARK_REASON fields (journalctl -o json, $n records)" ||
    fail "journal: structured fields" "no record with SPARK_WINDOW and SPARK_REASON"
  mark integration
  . "$V/guest/integration.sh"

  mark persist
  check "all values back before persist" same_as "$OUT/baseline.txt"
  check "apply dgx-spark --persist" st apply dgx-spark --persist
  snapshot "$OUT/persisted.txt"
  journalctl --list-boots --no-pager | wc -l >"$OUT/boots-before"
  next_boot boot2
fi

# ---------------------------------------------------------------------------------------------------
if [ "$stage" = boot2 ]; then
  mark values
  check "reboot: profile values in force from boot (systemd-sysctl)" same_as "$OUT/persisted.txt"
  check "reboot: profile in force" profile_in_force dgx-spark
  [ "$(journalctl --list-boots --no-pager | wc -l)" -gt "$(cat "$OUT/boots-before")" ] &&
    pass "reboot: journald knows it is a new boot" || fail "reboot: journald new boot"
  check "reboot: verify exit 0" st verify
  st status
  [ "$(journalctl -b -1 -u spark-tune.service -o cat --no-pager | wc -l)" -gt 0 ] &&
    pass "reboot: the agent's records of the previous boot are in journald's boot -1" ||
    fail "reboot: the agent's records of the previous boot" "journalctl -b -1 -u spark-tune.service is empty"
  check "revert after reboot" st revert
  [ ! -e /etc/sysctl.d/90-spark-tune.conf ] && pass "revert: sysctl.d drop-in removed" || fail "revert: sysctl.d drop-in removed"
  next_boot boot3
fi

# ---------------------------------------------------------------------------------------------------
if [ "$stage" = boot3 ]; then
  mark values
  check "second reboot: original values" same_as "$OUT/baseline.txt"
  mark remove
  check "before remove: apply dgx-spark" st apply dgx-spark
  # Removed while a load window and a guard are active: the window ends and is restored, the guarded
  # process keeps running outside its box, and the removal says both.
  dd if=/dev/zero of=/var/tmp/remove-model.bin bs=1M count=16 status=none
  wid=$(st window begin --files /var/tmp/remove-model.bin --ttl 1h --label before-remove)
  setsid sleep 100000 </dev/null >/dev/null 2>&1 &
  gpid=$!
  gid=$(st --json guard --pid "$gpid" --memory-max 64M | jq -r '.id // empty')
  [ -n "$wid" ] && [ -n "$gid" ] && pass "before remove: window $wid and guard $gid active" ||
    fail "before remove: window and guard" "window '$wid' guard '$gid'"
  if DEBIAN_FRONTEND=noninteractive apt-get remove -y spark-tune >"$OUT/remove.log" 2>&1; then pass "remove: apt-get remove spark-tune"; else fail "remove: apt-get remove"; fi
  cat "$OUT/remove.log"
  grep -q "load window $wid (before-remove) ended" "$OUT/remove.log" && pass "remove: says the window $wid ended" ||
    fail "remove: says the window ended" "$(grep spark-tune "$OUT/remove.log" | tail -n 5)"
  grep -q "guard $gid ended: process $gpid keeps running, outside its box" "$OUT/remove.log" &&
    pass "remove: says the guard $gid ended and its process runs on" ||
    fail "remove: says the guard ended" "$(grep spark-tune "$OUT/remove.log" | tail -n 5)"
  gcg=$(sed -n 's/^0:://p' "/proc/$gpid/cgroup" 2>/dev/null)
  kill -0 "$gpid" 2>/dev/null && [[ "$gcg" != *spark-guard* ]] && pass "remove: the guarded process runs on, outside its box ($gcg)" ||
    fail "remove: the guarded process runs on outside its box" "cgroup '$gcg'"
  kill "$gpid" 2>/dev/null
  check "remove: every value back to what it was before the install" same_as "$OUT/baseline.txt"
  [ "$(systemctl is-active spark-tune.service)" != active ] && pass "remove: agent stopped" || fail "remove: agent stopped"
  [ ! -e /etc/sysctl.d/90-spark-tune.conf ] && pass "remove: no sysctl.d drop-in" || fail "remove: sysctl.d drop-in left"
  finish
fi
