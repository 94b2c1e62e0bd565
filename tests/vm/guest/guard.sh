# Sourced by test.sh (stage boot1): a guard on the real cgroup v2 memory controller, its box a
# transient scope asked of systemd over D-Bus; a killed server restarted; a memcg OOM in the box.
setsid /bin/sh "$V/guest/server.sh" </dev/null >/dev/null 2>&1 &
spid=$!
sleep 1
sadj=$(cat "/proc/$spid/oom_score_adj" 2>/dev/null)
st --json guard --pid "$spid" --memory-max 96M --restart --restart-backoff 1s >"$OUT/guard.json"; rc=$?
cat "$OUT/guard.json"
gid=$(jq -r '.id // empty' "$OUT/guard.json" 2>/dev/null)
if [ $rc -ne 0 ] || [ -z "$gid" ]; then
  fail "guard --pid --memory-max 96M --restart" "exit $rc"
else
  pass "guard --pid: guard $gid"
  cg=$(sed -n 's/^0:://p' "/proc/$spid/cgroup")
  echo "server $spid in $cg"
  [[ "$cg" == */spark-guard-$gid.scope ]] && [ "$(systemctl show -p ActiveState --value "spark-guard-$gid.scope")" = active ] &&
    pass "guard: the box is a transient scope of systemd ($cg)" || fail "guard: transient scope" "server in $cg"
  d=/sys/fs/cgroup$cg
  mx=$(cat "$d/memory.max" 2>&1); hi=$(cat "$d/memory.high" 2>&1); og=$(cat "$d/memory.oom.group" 2>&1)
  # memory.high stays max: only --memory-high sets it (a derived one throttled the server below its
  # limit instead of letting the kernel kill it for the restart; docs/guard.md "Budget").
  [ "$mx" = 100663296 ] && [ "$hi" = max ] && [ "$og" = 1 ] &&
    pass "guard: memory.max=$mx memory.high=$hi memory.oom.group=$og" ||
    fail "guard: cgroup v2 limits" "memory.max=$mx memory.high=$hi memory.oom.group=$og"

  st guard wait server_restart --guard "$gid" --timeout 120s >"$OUT/guard-restart.txt" 2>&1 &
  wpid=$!; sleep 2
  kill -9 "$spid"
  wait "$wpid" && pass "guard: a killed server is restarted (server_restart)" ||
    fail "guard: killed server restarted" "$(tail -c 300 "$OUT/guard-restart.txt")"
  npid=$(st --json guard list | jq -r --arg g "$gid" '.[] | select(.id == $g) | .pid')
  [ -n "$npid" ] && [ "$npid" != "$spid" ] && kill -0 "$npid" 2>/dev/null &&
    pass "guard: the restarted server runs (pid $npid, in $(sed -n 's/^0:://p' "/proc/$npid/cgroup"))" ||
    fail "guard: restarted server runs" "guard list pid '${npid}'"
  # The agent's unit sets OOMScoreAdjust=-900 for the agent; a server it restarts gets the value the
  # original had, not the agent's (core/process.h).
  radj=$(cat "/proc/$npid/oom_score_adj" 2>&1)
  [ -n "$sadj" ] && [ "$radj" = "$sadj" ] &&
    pass "guard: the restarted server's oom_score_adj is the original's ($radj; the agent's $(cat "/proc/$(systemctl show -p MainPID --value spark-tune.service)/oom_score_adj" 2>&1))" ||
    fail "guard: restarted server's oom_score_adj" "$radj, the original's '$sadj'"

  st guard wait oom_kill --guard "$gid" --timeout 180s >"$OUT/guard-oom.txt" 2>&1 &
  wpid=$!; sleep 2
  echo "$npid" >/run/vmtest-grow  # this server grows, not the one restarted after it
  wait "$wpid" && pass "guard: memcg OOM in the box seen (memory.events oom_kill -> oom_kill event)" ||
    fail "guard: OOM in the box" "$(tail -c 300 "$OUT/guard-oom.txt")"
  cat "$OUT/guard-oom.txt"
  for _ in $(seq 1 60); do
    npid=$(st --json guard list | jq -r --arg g "$gid" '.[] | select(.id == $g) | .pid')
    [ -n "$npid" ] && kill -0 "$npid" 2>/dev/null && grep -q "spark-guard-$gid" "/proc/$npid/cgroup" && break
    sleep 1
  done
  [ -n "$npid" ] && kill -0 "$npid" 2>/dev/null && pass "guard: server restarted after the OOM kill (pid $npid)" ||
    fail "guard: server restarted after OOM"
  check "guard end $gid" st guard end "$gid"
  [ -n "$npid" ] && kill -0 "$npid" 2>/dev/null && ! grep -q "spark-guard-$gid" "/proc/$npid/cgroup" &&
    pass "guard end: the server keeps running outside its box" ||
    fail "guard end: server keeps running outside" "$(cat "/proc/$npid/cgroup" 2>&1)"
  [ -n "$npid" ] && kill "$npid" 2>/dev/null
  [ "$(st --json guard list | jq length)" = 0 ] && pass "guard list: empty after end" || fail "guard list: empty after end" "$(st guard list)"
fi
kill "$spid" 2>/dev/null
rm -f /run/vmtest-grow
# Nothing of the stand-in server outlives the stage (a grower that did filled the Debian 12 guest).
for _ in $(seq 1 50); do
  pkill -f "$V/guest/server.sh" 2>/dev/null; pkill -xf 'tail /dev/zero' 2>/dev/null
  pgrep -f "$V/guest/server.sh" >/dev/null || pgrep -xf 'tail /dev/zero' >/dev/null || break
  sleep 0.2
done
! pgrep -f "$V/guest/server.sh" >/dev/null && ! pgrep -xf 'tail /dev/zero' >/dev/null &&
  pass "guard: no stand-in server or grower left running" ||
  fail "guard: stand-in server left running" "$(pgrep -af "server.sh|tail /dev/zero")"
check "guard: revert has nothing left it cannot restore (exit 0)" st revert
