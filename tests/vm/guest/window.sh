# Sourced by test.sh (stage boot1): load windows on a loop device, read and mmap loaders.
loader=$V/itest/load_window
agent_log_since() { journalctl -u spark-tune.service --since "@$1" -o cat --no-pager; }
truncate -s 1200M /var/tmp/model.img
loopdev=$(losetup -f --show /var/tmp/model.img)
mkfs.ext4 -q "$loopdev" && mkdir -p /mnt/model && mount "$loopdev" /mnt/model
for i in 1 2 3 4; do dd if=/dev/urandom of=/mnt/model/shard$i bs=1M count=128 status=none; done
sync
echo "loop device $loopdev, $(du -sh /mnt/model | cut -f1) in 4 shards"
tw=$(date +%s)
if [ ! -x "$loader" ]; then
  skip "window: read and mmap loaders" "no load_window binary for $arch in the transfer disk"
else
  for kind in read mmap-hold; do
    echo 3 >/proc/sys/vm/drop_caches
    t0=$(date +%s); sleep 1
    check "window ($kind loader): spark-tune run --files exits 0" st run --files /mnt/model -- "$loader" --loader "$kind" /mnt/model/shard1 /mnt/model/shard2 /mnt/model/shard3 /mnt/model/shard4
    # The agent's lines reach journald some time after the CLI returns (seconds under TCG): wait
    # for the window's end line (journalctl --sync stores whatever was logged before it), 120 s at most.
    line=
    for _ in $(seq 120); do
      journalctl --sync 2>/dev/null
      agent_log_since "$t0" | grep -q 'ended (' && break
      sleep 1
    done
    line=$(agent_log_since "$t0" | grep -E 'window [^ ]+ cache: ' | tail -n 1)
    echo "agent: $line"
    command -v fincore >/dev/null && fincore /mnt/model/shard*
    ev=$(sed -nE 's/.* cache: ([0-9]+) evictions.*/\1/p' <<<"$line")
    po=$(sed -nE 's/.* ([0-9]+) pageouts.*/\1/p' <<<"$line")
    # A mapping read front to back is paged out behind its reader as it goes ("N behind the reader"),
    # an idle one once it stops growing ("N pageouts"): either is the mapping's cache given back.
    behind=$(sed -nE 's/.* ([0-9]+) behind the reader.*/\1/p' <<<"$line")
    [ "${ev:-0}" -gt 0 ] && pass "window ($kind loader): files evicted during the load ($ev evictions)" ||
      fail "window ($kind loader): evictions" "agent said: ${line:-nothing}"
    if [ "$kind" = mmap-hold ]; then
      [ $(( ${po:-0} + ${behind:-0} )) -gt 0 ] && pass "window (mmap loader): the mapping paged out (${po:-0} pageouts, ${behind:-0} behind the reader)" ||
        fail "window (mmap loader): idle mapping paged out" "agent said: ${line:-nothing}"
    fi
    agent_log_since "$t0" | grep -q 'ended (' && pass "window ($kind loader): ended, settings restored" ||
      fail "window ($kind loader): ended" "no 'ended' in the agent's log"
  done
fi
if [ -x "$loader" ]; then
  # The keeper counts a file's cached pages with cachestat (Linux 6.5+) and falls back to mincore;
  # the agent's survival of the windows above (no seccomp kill) is the check that it may call it.
  kver_ge 6 5 || skip "window: cachestat" "kernel $(uname -r) has no cachestat (Linux 6.5+): the keeper and the tests count cached pages with mincore"
  for f in "PAGEMAP_SCAN 6 7"; do
    set -- $f
    if kver_ge "$2" "$3"; then
      agent_log_since "$tw" | grep -q "no $1" && fail "window: $1" "the agent says the kernel lacks it, on $(uname -r)" ||
        pass "window: $1 used (kernel $(uname -r) has it)"
    else
      skip "window: $1" "kernel $(uname -r) has no $1 (Linux $2.$3+)"
      agent_log_since "$tw" | grep -q "no $1" && pass "window: the fallback for $1 taken and said in the agent's log" ||
        fail "window: $1 fallback said" "the agent's log does not say it"
    fi
  done
fi
# The agent lived through the windows: never restarted, never killed by its unit's seccomp filter
# (a syscall missing from SystemCallFilter killed it with SIGSYS at every window: audit type=1326).
restarts=$(systemctl show spark-tune.service -p NRestarts --value)
sigsys=$(journalctl -k -b --no-pager -o cat | grep -c 'type=1326.*comm="spark-tune"')
[ "${restarts:-1}" = 0 ] && [ "$sigsys" = 0 ] && pass "window: the agent lived through the windows (NRestarts 0, no seccomp kill)" ||
  fail "window: the agent lived through the windows" "NRestarts ${restarts:-?}, $sigsys seccomp kills: $(journalctl -k -b --no-pager -o cat | grep 'type=1326' | tail -n 1)"
check "window: values back after the windows" same_as "$OUT/baseline.txt"
umount /mnt/model; losetup -d "$loopdev"; rm -f /var/tmp/model.img
