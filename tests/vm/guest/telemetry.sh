# Sourced by test.sh (stage boot1): probes loaded and attached; a memcg OOM seen as an event.
spark-tune --json events --count 1 --timeout 120s >"$OUT/oom-event.json" 2>"$OUT/events.err" &
evpid=$!
# Wait until the probes are attached (events prints its probe status on stderr first).
for _ in $(seq 1 120); do [ -s "$OUT/events.err" ] && break; sleep 1; done
cat "$OUT/events.err"
grep -qiE 'attached|loaded' "$OUT/events.err" && ! grep -qi 'procfs only' "$OUT/events.err" &&
  pass "probes: loaded and attached ($(head -c 200 "$OUT/events.err" | tr '\n' ' '))" ||
  fail "probes: loaded and attached" "$(head -c 300 "$OUT/events.err" | tr '\n' ' ')"
sleep 2
# A process that grows without end in a 64 MiB scope: the kernel's memcg OOM killer takes it.
systemd-run --scope --quiet -p MemoryMax=64M -p MemorySwapMax=0 tail /dev/zero
echo "tail /dev/zero exited with $?"
wait "$evpid"; rc=$?
cat "$OUT/oom-event.json"
grep -q oom_kill "$OUT/oom-event.json" && pass "events: memcg OOM kill seen as an oom_kill event" ||
  fail "events: memcg OOM kill" "events exit $rc, printed: $(head -c 300 "$OUT/oom-event.json")"
