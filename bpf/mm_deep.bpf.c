// SPDX-License-Identifier: GPL-2.0
/* Deep mode, attached only for a bounded period (monitor --deep, or the detector): every page
 * allocation by order, and the tasks that allocate most. kmem:mm_page_alloc fires on every page
 * allocation of the host, so this is never left attached, and its program is as small as it can
 * be: one inlined per-CPU array lookup and three increments, no helper call. The task is not
 * looked up per allocation: the first allocation after a context switch notes the running task,
 * and sched:sched_switch moves the CPU's pending counts to the per-task hash when that task
 * leaves the CPU (only when it allocated; `current` is still that task there). The price: while
 * attached, every context switch runs a (mostly empty) program too. Allocations in interrupt
 * context count for the interrupted task, as bpftrace's `pid` would. One program per program
 * type and probe; user space loads the first this kernel runs. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "mm_events.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mm_deep_cpu);
} deep_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid */
	__type(value, struct mm_alloc_task);
} alloc_tasks SEC(".maps");

static __always_inline int on_alloc(unsigned int order)
{
	__u32 zero = 0;
	struct mm_deep_cpu *st = bpf_map_lookup_elem(&deep_cpu, &zero);
	if (!st)
		return 0;
	__u32 o = order < MM_ORDERS ? order : MM_ORDERS - 1;
	st->orders[o & (MM_ORDERS - 1)]++;
	if (!st->calls) {
		/* First allocation since this task came on the CPU (or since the last flush). */
		st->tgid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(st->comm, sizeof(st->comm));
	}
	st->calls++;
	st->pages += 1ULL << o;
	return 0;
}

/* The task leaving the CPU is still `current` here, and the counts pending on this CPU are its. */
static __always_inline int on_switch(void)
{
	__u32 zero = 0;
	struct mm_deep_cpu *st = bpf_map_lookup_elem(&deep_cpu, &zero);
	if (!st || !st->calls)
		return 0;
	__u32 tgid = st->tgid;
	struct mm_alloc_task *t = bpf_map_lookup_elem(&alloc_tasks, &tgid);
	if (!t) {
		struct mm_alloc_task fresh = {};
		bpf_map_update_elem(&alloc_tasks, &tgid, &fresh, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&alloc_tasks, &tgid);
	}
	if (t) {
		/* Its name as it leaves the CPU: a task that exec'd or renamed itself shows as it is now. */
		bpf_get_current_comm(t->comm, sizeof(t->comm));
		__sync_fetch_and_add(&t->calls, st->calls);
		__sync_fetch_and_add(&t->pages, st->pages);
	}
	st->calls = 0;
	st->pages = 0;
	return 0;
}

SEC("tp_btf/mm_page_alloc")
int BPF_PROG(page_alloc_btf, struct page *page, unsigned int order) { return on_alloc(order); }
SEC("raw_tp/mm_page_alloc")
int BPF_PROG(page_alloc_raw, struct page *page, unsigned int order) { return on_alloc(order); }
SEC("tp/kmem/mm_page_alloc")
int page_alloc_tp(struct trace_event_raw_mm_page_alloc *ctx) { return on_alloc(ctx->order); }

SEC("tp_btf/sched_switch")
int BPF_PROG(task_switch_btf) { return on_switch(); }
SEC("raw_tp/sched_switch")
int BPF_PROG(task_switch_raw) { return on_switch(); }
SEC("tp/sched/sched_switch")
int task_switch_tp(void *ctx) { return on_switch(); }

char LICENSE[] SEC("license") = "GPL";
