// SPDX-License-Identifier: GPL-2.0
/* Wake-ups for a load window's floor (issue 14 part 2, agent/telemetry/reclaim_wake.h): the kernel
 * starts reclaiming (kswapd woken, an allocation reclaiming directly, a memory cgroup at its limit
 * reclaiming), which means free memory is falling fast right now; the floor's watch thread then
 * reads meminfo at once instead of at its next 10 ms check.
 *
 * One record per wake-up through the ring buffer, with an immediate wake-up of the reader, at most
 * one per min_gap_ns (reclaim runs in bursts of thousands of calls; one check per burst is enough;
 * what was held back is counted). Each tracepoint has three programs, <probe>_btf (tp_btf), _raw
 * (raw_tp) and _tp (classic tracepoint); user space loads one kind for all, the first that loads. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define FLOOR_WAKE_KSWAPD 0
#define FLOOR_WAKE_DIRECT 1
#define FLOOR_WAKE_MEMCG 2
#define FLOOR_WAKE_SOURCES 3

struct floor_wake_event {
	__u64 ts_ns;
	__u32 source;
	__u32 pad;
};

const volatile __u64 min_gap_ns = 1000000;

__u64 last_ns = 0;
__u64 seen[FLOOR_WAKE_SOURCES] = {};  /* every hit, by source */
__u64 sent = 0;                       /* records written */
__u64 lost = 0;                       /* ring buffer full */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} wakes SEC(".maps");

static __always_inline int wake(__u32 source)
{
	if (source >= FLOOR_WAKE_SOURCES)
		return 0;
	__sync_fetch_and_add(&seen[source], 1);
	__u64 now = bpf_ktime_get_ns();
	__u64 last = last_ns;
	if (now - last < min_gap_ns)
		return 0;
	/* Two CPUs may both pass: two records, harmless. */
	last_ns = now;
	struct floor_wake_event e = {.ts_ns = now, .source = source};
	if (bpf_ringbuf_output(&wakes, &e, sizeof(e), BPF_RB_FORCE_WAKEUP) == 0)
		__sync_fetch_and_add(&sent, 1);
	else
		__sync_fetch_and_add(&lost, 1);
	return 0;
}

SEC("tp_btf/mm_vmscan_kswapd_wake")
int kswapd_wake_btf(__u64 *ctx) { return wake(FLOOR_WAKE_KSWAPD); }
SEC("raw_tp/mm_vmscan_kswapd_wake")
int kswapd_wake_raw(void *ctx) { return wake(FLOOR_WAKE_KSWAPD); }
SEC("tp/vmscan/mm_vmscan_kswapd_wake")
int kswapd_wake_tp(void *ctx) { return wake(FLOOR_WAKE_KSWAPD); }

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int direct_reclaim_btf(__u64 *ctx) { return wake(FLOOR_WAKE_DIRECT); }
SEC("raw_tp/mm_vmscan_direct_reclaim_begin")
int direct_reclaim_raw(void *ctx) { return wake(FLOOR_WAKE_DIRECT); }
SEC("tp/vmscan/mm_vmscan_direct_reclaim_begin")
int direct_reclaim_tp(void *ctx) { return wake(FLOOR_WAKE_DIRECT); }

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int memcg_reclaim_btf(__u64 *ctx) { return wake(FLOOR_WAKE_MEMCG); }
SEC("raw_tp/mm_vmscan_memcg_reclaim_begin")
int memcg_reclaim_raw(void *ctx) { return wake(FLOOR_WAKE_MEMCG); }
SEC("tp/vmscan/mm_vmscan_memcg_reclaim_begin")
int memcg_reclaim_tp(void *ctx) { return wake(FLOOR_WAKE_MEMCG); }

char LICENSE[] SEC("license") = "GPL";
