/* Memory-management probes (mm_probes.bpf.c, mm_deep.bpf.c): maps and events shared with user
 * space (agent/telemetry/mm_probes.h). Plain C, fixed-width types only. */
#ifndef SPARK_TUNE_BPF_MM_EVENTS_H
#define SPARK_TUNE_BPF_MM_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define MM_ORDERS 16       /* >= NR_PAGE_ORDERS on every supported configuration */
#define MM_HIST_SLOTS 32   /* log2(ns) buckets: slot i counts [2^i, 2^(i+1)) ns */

/* Latency histograms, one per kind, in a per-CPU array. */
enum mm_hist_kind {
	MM_HIST_DIRECT_RECLAIM = 0,
	MM_HIST_MEMCG_RECLAIM = 1,
	MM_HIST_COMPACTION_DIRECT = 2, /* compact_zone() run by an allocating task */
	MM_HIST_COMPACTION_OTHER = 3,  /* kcompactd, proactive, /proc/sys/vm/compact_memory */
	MM_HIST_KINDS = 4,
};

struct mm_hist {
	__u64 slots[MM_HIST_SLOTS];
	__u64 count;
	__u64 sum_ns;
	__u64 max_ns;
};

/* Counters, in a per-CPU array of MM_COUNTERS u64 values. */
enum mm_counter {
	MM_C_COMPACT_BEGIN = 0,
	MM_C_COMPACT_END,
	MM_C_COMPACT_DIRECT_BEGIN,
	MM_C_COMPACT_MIGRATE_SCANNED, /* sum of cc->total_migrate_scanned at mm_compaction_end */
	MM_C_COMPACT_FREE_SCANNED,    /* sum of cc->total_free_scanned at mm_compaction_end */
	MM_C_COMPACT_TRY,             /* mm_compaction_try_to_compact_pages */
	MM_C_DIRECT_RECLAIM,
	MM_C_DIRECT_RECLAIMED_PAGES,
	MM_C_MEMCG_RECLAIM,
	MM_C_MEMCG_RECLAIMED_PAGES,
	MM_C_EXTFRAG,
	MM_C_EXTFRAG_FRAGMENTING,     /* fallback_order < pageblock_order */
	MM_C_EXTFRAG_CHANGE_OWNER,    /* the whole pageblock was stolen (classic tp only) */
	MM_C_OOM_VICTIM,
	MM_C_OOM_RECLAIM_RETRY,
	MM_C_OOM_COMPACT_RETRY,
	MM_C_EVENTS_DROPPED,          /* ring buffer full */
	MM_C_STALL_EVENTS,
	MM_C_COMPACT_STATUS = 20,     /* + enum compact_result (0..15) at mm_compaction_end */
	MM_C_COMPACT_TRY_ORDER = 36,  /* + order */
	MM_C_EXTFRAG_ALLOC_ORDER = 52,    /* + alloc_order */
	MM_C_EXTFRAG_FALLBACK_ORDER = 68, /* + fallback_order */
	MM_COUNTERS = 84,
};

enum mm_event_type {
	MM_EVENT_OOM_VICTIM = 1,
	MM_EVENT_STALL = 2,
};

enum mm_event_flags {
	MM_EF_MEMCG_OOM = 1,      /* a memory cgroup of the victim was at its limit */
	MM_EF_GLOBAL_OOM = 2,     /* no limited memcg of the victim was at its limit */
	MM_EF_MEMCG_UNKNOWN = 4,  /* classic tp: no task pointer, memcg not read */
	MM_EF_COMPACTION_DIRECT = 8,
};

struct mm_event {
	__u32 type;          /* enum mm_event_type */
	__u32 flags;         /* enum mm_event_flags */
	__u32 pid;           /* thread group of the victim / stalled task */
	__u32 tid;
	__u64 ts_ns;         /* bpf_ktime_get_ns() */
	__u64 duration_ns;   /* stall: how long */
	__u64 memcg_id;      /* victim's memory cgroup: kernfs id = directory inode */
	__u64 oom_memcg_id;  /* the memcg found at its limit (memcg OOM), else 0 */
	__u64 rss_anon_kb;
	__u64 rss_file_kb;
	__u64 rss_shmem_kb;
	__u64 total_vm_kb;
	__u64 nr_reclaimed;  /* stall in reclaim: pages reclaimed */
	__s32 order;         /* stall: allocation order; -1 when not known */
	__s32 oom_score_adj;
	__u32 uid;
	__u32 stall_kind;    /* enum mm_hist_kind for a stall */
	char comm[16];
	char memcg_name[64]; /* leaf name of memcg_id */
};

/* Deep mode (mm_deep.bpf.c): per-CPU state, found without a helper call (the per-CPU array
 * lookup is inlined). The task running on a CPU accumulates here; sched_switch moves its counts to
 * the alloc_tasks hash when it leaves the CPU (user space adds what is still pending). */
struct mm_deep_cpu {
	__u64 calls;  /* allocations since the last flush, by tgid below */
	__u64 pages;
	__u32 tgid;   /* valid while calls != 0 */
	__u32 pad;
	char comm[16];
	__u64 orders[MM_ORDERS]; /* the order histogram (never flushed) */
};

/* Deep mode: per-task page allocation totals. */
struct mm_alloc_task {
	__u64 calls;
	__u64 pages;
	char comm[16];
};

#endif
