// SPDX-License-Identifier: GPL-2.0
/* Deep mode, attached only for a bounded period (monitor --deep, or the detector): every page
 * allocation by order, and the tasks that allocate most. kmem:mm_page_alloc fires on every page
 * allocation of the host, so this is never left attached. One program per program type; user
 * space loads the first this kernel runs. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "mm_events.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MM_ORDERS);
	__type(key, __u32);
	__type(value, __u64);
} alloc_orders SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid */
	__type(value, struct mm_alloc_task);
} alloc_tasks SEC(".maps");

static __always_inline int on_alloc(unsigned int order)
{
	__u32 o = order < MM_ORDERS ? order : MM_ORDERS - 1;
	__u64 *n = bpf_map_lookup_elem(&alloc_orders, &o);
	if (n)
		*n += 1;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct mm_alloc_task *t = bpf_map_lookup_elem(&alloc_tasks, &tgid);
	if (!t) {
		struct mm_alloc_task fresh = {};
		bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
		bpf_map_update_elem(&alloc_tasks, &tgid, &fresh, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&alloc_tasks, &tgid);
		if (!t)
			return 0;
	}
	t->calls += 1;
	t->pages += 1ULL << o;
	return 0;
}

SEC("tp_btf/mm_page_alloc")
int BPF_PROG(page_alloc_btf, struct page *page, unsigned int order) { return on_alloc(order); }
SEC("raw_tp/mm_page_alloc")
int BPF_PROG(page_alloc_raw, struct page *page, unsigned int order) { return on_alloc(order); }
SEC("tp/kmem/mm_page_alloc")
int page_alloc_tp(struct trace_event_raw_mm_page_alloc *ctx) { return on_alloc(ctx->order); }

char LICENSE[] SEC("license") = "GPL";
