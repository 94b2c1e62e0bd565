# Sourced by test.sh (stage boot1): probes loaded and attached; a memcg OOM seen as an event.
# The agent's probes (monitor asks the running agent).
spark-tune --json monitor --count 1 >"$OUT/monitor.json" 2>&1
status=$(jq -r '.probes // empty' "$OUT/monitor.json" 2>/dev/null | head -n 1)
on=$(sed -nE 's/.*eBPF: ([0-9]+)\/([0-9]+) probes attached.*/\1/p' <<<"$status")
all=$(sed -nE 's/.*eBPF: ([0-9]+)\/([0-9]+) probes attached.*/\2/p' <<<"$status")
[ -n "$on" ] && [ "$on" = "$all" ] && [ "$on" -gt 0 ] && pass "probes: the agent's probes loaded and attached ($status)" ||
  fail "probes: loaded and attached" "monitor said: $(head -c 300 "$OUT/monitor.json" | tr '\n' ' ')"
# The events stream from the agent.
spark-tune events --timeout 300s >"$OUT/events.txt" 2>"$OUT/events.err" &
evpid=$!
# Wait until events is connected (it says so on stderr first).
for _ in $(seq 1 120); do [ -s "$OUT/events.err" ] && break; sleep 1; done
cat "$OUT/events.err"
sleep 2
# A process that grows without end in a 64 MiB scope: the kernel's memcg OOM killer takes it.
systemd-run --scope --quiet -p MemoryMax=64M -p MemorySwapMax=0 tail /dev/zero
echo "tail /dev/zero exited with $?"
for _ in $(seq 1 120); do grep -q 'oom_kill' "$OUT/events.txt" && break; sleep 1; done
kill "$evpid" 2>/dev/null; wait "$evpid" 2>/dev/null
cat "$OUT/events.txt"
grep -q 'oom_kill' "$OUT/events.txt" && pass "events: memcg OOM kill seen as an oom_kill event ($(grep -m1 oom_kill "$OUT/events.txt" | cut -c1-120))" ||
  fail "events: memcg OOM kill" "events printed: $(head -c 300 "$OUT/events.txt" | tr '\n' ' ')"
