// SPDX-License-Identifier: GPL-2.0
/* Which tracepoint program types this kernel loads and runs: the same tracepoint (task
 * rename, fired by prctl(PR_SET_NAME)) through tp_btf, raw_tp and classic tp. User space
 * enables each program on its own, so one that the kernel refuses does not hide the others. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "events.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FEATURE_PROBE_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

const volatile __u32 target_tgid = 0;

static __always_inline void count(__u32 slot)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (target_tgid && tgid != target_tgid)
		return;
	__u64 *v = bpf_map_lookup_elem(&hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tp_btf/task_rename")
int BPF_PROG(probe_tp_btf, struct task_struct *task, const char *comm)
{
	count(FEATURE_PROBE_TP_BTF);
	return 0;
}

SEC("raw_tp/task_rename")
int probe_raw_tp(void *ctx)
{
	count(FEATURE_PROBE_RAW_TP);
	return 0;
}

SEC("tp/task/task_rename")
int probe_tp(void *ctx)
{
	count(FEATURE_PROBE_TP);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
