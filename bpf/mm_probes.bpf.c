// SPDX-License-Identifier: GPL-2.0
/* Always-on memory-management probes: compaction, direct and memcg reclaim latency, migrate-type
 * fallbacks, OOM victims. Aggregated in the kernel (per-CPU counters and log2 histograms); only
 * discrete events (an OOM victim, a stall over the threshold) go through the ring buffer.
 *
 * Every tracepoint has three programs, <probe>_btf (tp_btf), <probe>_raw (raw_tp) and <probe>_tp
 * (classic tracepoint); user space loads exactly one of them per probe, the first this kernel
 * runs, so a missing program type or tracepoint loses one signal, not all. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "mm_events.h"

/* Set by user space before load. */
const volatile __u32 page_kb = 4;           /* page size in KiB */
const volatile __s32 pageblock_order = 9;   /* fallback below this order fragments a pageblock */
const volatile __u64 oom_margin_pages = 1024; /* usage this close to max counts as "at the limit" */
/* Changeable while running (memory-mapped .bss). */
__u64 stall_threshold_ns = 0;               /* 0: no stall events */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MM_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MM_HIST_KINDS);
	__type(key, __u32);
	__type(value, struct mm_hist);
} hists SEC(".maps");

struct start_val {
	__u64 ts;
	__s32 order;
	__u32 direct;
};

/* Key: tid | kind << 32. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct start_val);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += n; /* per-CPU slot: no atomics needed */
}

static __always_inline void count(__u32 idx) { count_n(idx, 1); }

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

static __always_inline void hist_add(__u32 kind, __u64 ns)
{
	struct mm_hist *h = bpf_map_lookup_elem(&hists, &kind);
	if (!h)
		return;
	__u32 slot = log2_u64(ns);
	if (slot >= MM_HIST_SLOTS)
		slot = MM_HIST_SLOTS - 1;
	h->slots[slot]++;
	h->count++;
	h->sum_ns += ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

static __always_inline __u64 start_key(__u32 kind)
{
	return (__u32)bpf_get_current_pid_tgid() | ((__u64)kind << 32);
}

static __always_inline void stall_begin(__u32 kind, __s32 order, __u32 direct)
{
	__u64 key = start_key(kind);
	struct start_val v = { .ts = bpf_ktime_get_ns(), .order = order, .direct = direct };
	bpf_map_update_elem(&starts, &key, &v, BPF_ANY);
}

static __always_inline void emit_stall(__u32 kind, __u64 ns, __s32 order, __u64 nr_reclaimed, __u32 flags)
{
	struct mm_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(MM_C_EVENTS_DROPPED);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	__u64 id = bpf_get_current_pid_tgid();
	e->type = MM_EVENT_STALL;
	e->flags = flags;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->ts_ns = bpf_ktime_get_ns();
	e->duration_ns = ns;
	e->order = order;
	e->nr_reclaimed = nr_reclaimed;
	e->stall_kind = kind;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	count(MM_C_STALL_EVENTS);
	/* Batched wakeups: a stall is worth reading soon, not at once; wake the reader only when
	 * enough has piled up (user space also drains the ring on its own tick). */
	__u64 flags_rb = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > 16 * sizeof(*e) ? BPF_RB_FORCE_WAKEUP
											  : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags_rb);
}

/* Returns the kind's elapsed time, 0 when no begin was seen. */
static __always_inline __u64 stall_end(__u32 kind, __s32 *order, __u32 *direct)
{
	__u64 key = start_key(kind);
	struct start_val *v = bpf_map_lookup_elem(&starts, &key);
	if (!v)
		return 0;
	__u64 ns = bpf_ktime_get_ns() - v->ts;
	*order = v->order;
	*direct = v->direct;
	bpf_map_delete_elem(&starts, &key);
	return ns;
}

/* ---- direct and memcg reclaim ---------------------------------------------------------- */

static __always_inline int reclaim_begin(__u32 kind, int order)
{
	count(kind == MM_HIST_DIRECT_RECLAIM ? MM_C_DIRECT_RECLAIM : MM_C_MEMCG_RECLAIM);
	stall_begin(kind, order, 1);
	return 0;
}

static __always_inline int reclaim_end(__u32 kind, __u64 nr_reclaimed)
{
	__s32 order = -1;
	__u32 direct = 0;
	count_n(kind == MM_HIST_DIRECT_RECLAIM ? MM_C_DIRECT_RECLAIMED_PAGES : MM_C_MEMCG_RECLAIMED_PAGES, nr_reclaimed);
	__u64 ns = stall_end(kind, &order, &direct);
	if (!ns)
		return 0;
	hist_add(kind, ns);
	__u64 thr = stall_threshold_ns;
	if (thr && ns >= thr)
		emit_stall(kind, ns, order, nr_reclaimed, 0);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(direct_reclaim_begin_btf, int order, gfp_t gfp) { return reclaim_begin(MM_HIST_DIRECT_RECLAIM, order); }
SEC("raw_tp/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(direct_reclaim_begin_raw, int order, gfp_t gfp) { return reclaim_begin(MM_HIST_DIRECT_RECLAIM, order); }
SEC("tp/vmscan/mm_vmscan_direct_reclaim_begin")
int direct_reclaim_begin_tp(struct trace_event_raw_mm_vmscan_direct_reclaim_begin_template *ctx)
{
	return reclaim_begin(MM_HIST_DIRECT_RECLAIM, ctx->order);
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(direct_reclaim_end_btf, unsigned long nr) { return reclaim_end(MM_HIST_DIRECT_RECLAIM, nr); }
SEC("raw_tp/mm_vmscan_direct_reclaim_end")
int BPF_PROG(direct_reclaim_end_raw, unsigned long nr) { return reclaim_end(MM_HIST_DIRECT_RECLAIM, nr); }
SEC("tp/vmscan/mm_vmscan_direct_reclaim_end")
int direct_reclaim_end_tp(struct trace_event_raw_mm_vmscan_direct_reclaim_end_template *ctx)
{
	return reclaim_end(MM_HIST_DIRECT_RECLAIM, ctx->nr_reclaimed);
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(memcg_reclaim_begin_btf, int order, gfp_t gfp) { return reclaim_begin(MM_HIST_MEMCG_RECLAIM, order); }
SEC("raw_tp/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(memcg_reclaim_begin_raw, int order, gfp_t gfp) { return reclaim_begin(MM_HIST_MEMCG_RECLAIM, order); }
SEC("tp/vmscan/mm_vmscan_memcg_reclaim_begin")
int memcg_reclaim_begin_tp(struct trace_event_raw_mm_vmscan_direct_reclaim_begin_template *ctx)
{
	return reclaim_begin(MM_HIST_MEMCG_RECLAIM, ctx->order);
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(memcg_reclaim_end_btf, unsigned long nr) { return reclaim_end(MM_HIST_MEMCG_RECLAIM, nr); }
SEC("raw_tp/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(memcg_reclaim_end_raw, unsigned long nr) { return reclaim_end(MM_HIST_MEMCG_RECLAIM, nr); }
SEC("tp/vmscan/mm_vmscan_memcg_reclaim_end")
int memcg_reclaim_end_tp(struct trace_event_raw_mm_vmscan_direct_reclaim_end_template *ctx)
{
	return reclaim_end(MM_HIST_MEMCG_RECLAIM, ctx->nr_reclaimed);
}

/* ---- compaction ------------------------------------------------------------------------ */

/* Classic tp has no compact_control: a compaction run by a user task (not a kernel thread) is
 * counted as direct. */
static __always_inline __u32 current_is_user_task(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	return !(BPF_CORE_READ(t, flags) & 0x00200000 /* PF_KTHREAD */);
}

static __always_inline int compaction_begin(__u32 direct, __s32 order)
{
	count(MM_C_COMPACT_BEGIN);
	if (direct)
		count(MM_C_COMPACT_DIRECT_BEGIN);
	stall_begin(direct ? MM_HIST_COMPACTION_DIRECT : MM_HIST_COMPACTION_OTHER, order, direct);
	return 0;
}

static __always_inline int compaction_end(__u32 direct, int status, __u64 migrate_scanned, __u64 free_scanned)
{
	__u32 kind = direct ? MM_HIST_COMPACTION_DIRECT : MM_HIST_COMPACTION_OTHER;
	count(MM_C_COMPACT_END);
	count_n(MM_C_COMPACT_MIGRATE_SCANNED, migrate_scanned);
	count_n(MM_C_COMPACT_FREE_SCANNED, free_scanned);
	if (status >= 0 && status < 16)
		count(MM_C_COMPACT_STATUS + status);
	__s32 order = -1;
	__u32 was_direct = 0;
	__u64 ns = stall_end(kind, &order, &was_direct);
	if (!ns)
		return 0;
	hist_add(kind, ns);
	__u64 thr = stall_threshold_ns;
	if (thr && ns >= thr && direct)
		emit_stall(kind, ns, order, 0, MM_EF_COMPACTION_DIRECT);
	return 0;
}

static __always_inline int compaction_begin_cc(struct compact_control *cc)
{
	return compaction_begin(BPF_CORE_READ(cc, direct_compaction), BPF_CORE_READ(cc, order));
}

static __always_inline int compaction_end_cc(struct compact_control *cc, int status)
{
	return compaction_end(BPF_CORE_READ(cc, direct_compaction), status, BPF_CORE_READ(cc, total_migrate_scanned),
			      BPF_CORE_READ(cc, total_free_scanned));
}

SEC("tp_btf/mm_compaction_begin")
int BPF_PROG(compaction_begin_btf, struct compact_control *cc) { return compaction_begin_cc(cc); }
SEC("raw_tp/mm_compaction_begin")
int BPF_PROG(compaction_begin_raw, struct compact_control *cc) { return compaction_begin_cc(cc); }
SEC("tp/compaction/mm_compaction_begin")
int compaction_begin_tp(void *ctx) { return compaction_begin(current_is_user_task(), -1); }

SEC("tp_btf/mm_compaction_end")
int BPF_PROG(compaction_end_btf, struct compact_control *cc, unsigned long zone_start, unsigned long zone_end, bool sync,
	     int status)
{
	return compaction_end_cc(cc, status);
}
SEC("raw_tp/mm_compaction_end")
int BPF_PROG(compaction_end_raw, struct compact_control *cc, unsigned long zone_start, unsigned long zone_end, bool sync,
	     int status)
{
	return compaction_end_cc(cc, status);
}
SEC("tp/compaction/mm_compaction_end")
int compaction_end_tp(struct trace_event_raw_mm_compaction_end *ctx)
{
	return compaction_end(current_is_user_task(), ctx->status, 0, 0);
}

static __always_inline int compaction_try(int order)
{
	count(MM_C_COMPACT_TRY);
	if (order >= 0 && order < MM_ORDERS)
		count(MM_C_COMPACT_TRY_ORDER + order);
	return 0;
}

SEC("tp_btf/mm_compaction_try_to_compact_pages")
int BPF_PROG(compaction_try_btf, int order, gfp_t gfp, int prio) { return compaction_try(order); }
SEC("raw_tp/mm_compaction_try_to_compact_pages")
int BPF_PROG(compaction_try_raw, int order, gfp_t gfp, int prio) { return compaction_try(order); }
SEC("tp/compaction/mm_compaction_try_to_compact_pages")
int compaction_try_tp(struct trace_event_raw_mm_compaction_try_to_compact_pages *ctx) { return compaction_try(ctx->order); }

/* ---- migrate-type fallbacks ------------------------------------------------------------ */

static __always_inline int extfrag(int alloc_order, int fallback_order, int change_owner)
{
	count(MM_C_EXTFRAG);
	if (fallback_order < pageblock_order)
		count(MM_C_EXTFRAG_FRAGMENTING);
	if (change_owner > 0)
		count(MM_C_EXTFRAG_CHANGE_OWNER);
	if (alloc_order >= 0 && alloc_order < MM_ORDERS)
		count(MM_C_EXTFRAG_ALLOC_ORDER + alloc_order);
	if (fallback_order >= 0 && fallback_order < MM_ORDERS)
		count(MM_C_EXTFRAG_FALLBACK_ORDER + fallback_order);
	return 0;
}

SEC("tp_btf/mm_page_alloc_extfrag")
int BPF_PROG(extfrag_btf, struct page *page, int alloc_order, int fallback_order, int alloc_mt, int fallback_mt)
{
	return extfrag(alloc_order, fallback_order, -1);
}
SEC("raw_tp/mm_page_alloc_extfrag")
int BPF_PROG(extfrag_raw, struct page *page, int alloc_order, int fallback_order, int alloc_mt, int fallback_mt)
{
	return extfrag(alloc_order, fallback_order, -1);
}
SEC("tp/kmem/mm_page_alloc_extfrag")
int extfrag_tp(struct trace_event_raw_mm_page_alloc_extfrag *ctx)
{
	return extfrag(ctx->alloc_order, ctx->fallback_order, ctx->change_ownership);
}

/* ---- OOM ------------------------------------------------------------------------------- */

static __always_inline struct mem_cgroup *task_memcg(struct task_struct *task)
{
	struct css_set *cgroups = BPF_CORE_READ(task, cgroups);
	if (!cgroups)
		return 0;
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct cgroup_subsys_state *css = 0;
	bpf_probe_read_kernel(&css, sizeof(css),
			      (void *)cgroups + bpf_core_field_offset(struct css_set, subsys) + id * sizeof(void *));
	/* css is the first member of struct mem_cgroup. */
	return (struct mem_cgroup *)css;
}

static __always_inline __u64 memcg_id(struct mem_cgroup *memcg)
{
	return BPF_CORE_READ(memcg, css.cgroup, kn, id);
}

/* Walks the victim's memcg and its ancestors: the first limited one at its limit is where the
 * OOM happened. None: the whole system was out of memory. */
static __always_inline __u64 oom_memcg(struct mem_cgroup *memcg)
{
	if (!memcg)
		return 0;
	__u64 off = bpf_core_field_offset(struct mem_cgroup, memory);
	struct page_counter *pc = (struct page_counter *)((void *)memcg + off);
	for (int depth = 0; depth < 16 && pc; depth++) {
		__u64 max = BPF_CORE_READ(pc, max);
		__u64 usage = BPF_CORE_READ(pc, usage.counter);
		/* PAGE_COUNTER_MAX is LONG_MAX / PAGE_SIZE: anything that large is "no limit". */
		if (max < (1ULL << 50) && usage + oom_margin_pages >= max)
			return memcg_id((struct mem_cgroup *)((void *)pc - off));
		pc = BPF_CORE_READ(pc, parent);
	}
	return 0;
}

/* Before 6.2 an mm's RSS counters were `struct mm_rss_stat { atomic_long_t count[]; }`; since, they
 * are an array of percpu_counter. The pinned vmlinux.h has the new layout: the old one is a flavor,
 * told apart at load time by whether struct mm_rss_stat exists. Without it the field offset of rss_stat (an array here, a struct on 6.1)
 * does not relocate and the whole program fails to load (tp_btf and raw_tp gave EINVAL on 6.1). */
struct mm_rss_stat___pre62 {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));
struct mm_struct___pre62 {
	struct mm_rss_stat___pre62 rss_stat;
} __attribute__((preserve_access_index));

static __always_inline __u64 mm_counter_pages(struct mm_struct *mm, int idx)
{
	__s64 v = 0;
	if (bpf_core_type_exists(struct mm_rss_stat___pre62)) { /* gone since 6.2 */
		struct mm_struct___pre62 *old = (void *)mm;
		v = BPF_CORE_READ(old, rss_stat.count[idx].counter);
	} else {
		/* The stride is the kernel's size of percpu_counter (lock debugging changes it). */
		struct percpu_counter *c = (struct percpu_counter *)((void *)mm + bpf_core_field_offset(struct mm_struct, rss_stat) +
								     idx * bpf_core_type_size(struct percpu_counter));
		v = BPF_CORE_READ(c, count);
	}
	return v > 0 ? (__u64)v : 0;
}

static __always_inline int mark_victim(struct task_struct *task)
{
	count(MM_C_OOM_VICTIM);
	struct mm_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(MM_C_EVENTS_DROPPED);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = MM_EVENT_OOM_VICTIM;
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = BPF_CORE_READ(task, tgid);
	e->tid = BPF_CORE_READ(task, pid);
	e->order = -1;
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	e->oom_score_adj = BPF_CORE_READ(task, signal, oom_score_adj);
	e->uid = BPF_CORE_READ(task, cred, uid.val);
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (mm) {
		e->rss_file_kb = mm_counter_pages(mm, MM_FILEPAGES) * page_kb;
		e->rss_anon_kb = mm_counter_pages(mm, MM_ANONPAGES) * page_kb;
		e->rss_shmem_kb = mm_counter_pages(mm, MM_SHMEMPAGES) * page_kb;
		e->total_vm_kb = BPF_CORE_READ(mm, total_vm) * page_kb;
	}
	struct mem_cgroup *memcg = task_memcg(task);
	if (memcg) {
		e->memcg_id = memcg_id(memcg);
		const char *name = BPF_CORE_READ(memcg, css.cgroup, kn, name);
		if (name)
			bpf_probe_read_kernel_str(e->memcg_name, sizeof(e->memcg_name), name);
	}
	e->oom_memcg_id = oom_memcg(memcg);
	e->flags = e->oom_memcg_id ? MM_EF_MEMCG_OOM : MM_EF_GLOBAL_OOM;
	bpf_ringbuf_submit(e, 0); /* rare and urgent: wake the reader now */
	return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(mark_victim_btf, struct task_struct *task) { return mark_victim(task); }
SEC("raw_tp/mark_victim")
int BPF_PROG(mark_victim_raw, struct task_struct *task) { return mark_victim(task); }
SEC("tp/oom/mark_victim")
int mark_victim_tp(struct trace_event_raw_mark_victim *ctx)
{
	count(MM_C_OOM_VICTIM);
	struct mm_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(MM_C_EVENTS_DROPPED);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = MM_EVENT_OOM_VICTIM;
	e->flags = MM_EF_MEMCG_UNKNOWN;
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = ctx->pid;
	e->tid = ctx->pid;
	e->order = -1;
	unsigned short off = ctx->__data_loc_comm & 0xffff;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), (void *)ctx + off);
	e->rss_anon_kb = ctx->anon_rss;
	e->rss_file_kb = ctx->file_rss;
	e->rss_shmem_kb = ctx->shmem_rss;
	e->total_vm_kb = ctx->total_vm;
	e->uid = ctx->uid;
	e->oom_score_adj = ctx->oom_score_adj;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/reclaim_retry_zone")
int BPF_PROG(reclaim_retry_zone_btf) { count(MM_C_OOM_RECLAIM_RETRY); return 0; }
SEC("raw_tp/reclaim_retry_zone")
int BPF_PROG(reclaim_retry_zone_raw) { count(MM_C_OOM_RECLAIM_RETRY); return 0; }
SEC("tp/oom/reclaim_retry_zone")
int reclaim_retry_zone_tp(void *ctx) { count(MM_C_OOM_RECLAIM_RETRY); return 0; }

SEC("tp_btf/compact_retry")
int BPF_PROG(compact_retry_btf) { count(MM_C_OOM_COMPACT_RETRY); return 0; }
SEC("raw_tp/compact_retry")
int BPF_PROG(compact_retry_raw) { count(MM_C_OOM_COMPACT_RETRY); return 0; }
SEC("tp/oom/compact_retry")
int compact_retry_tp(void *ctx) { count(MM_C_OOM_COMPACT_RETRY); return 0; }

char LICENSE[] SEC("license") = "GPL";
