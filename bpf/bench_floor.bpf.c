// SPDX-License-Identifier: GPL-2.0
/* For bench/probe_overhead only: an empty program on kmem:mm_page_alloc (tp_btf), the cost of
 * the kernel's tracepoint -> BPF dispatch alone, below which no program on this tracepoint can go. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/mm_page_alloc")
int BPF_PROG(floor_btf, struct page *page, unsigned int order) { return 0; }

char LICENSE[] SEC("license") = "GPL";
