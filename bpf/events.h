/* Structures shared by the BPF programs and user space. Plain C, fixed-width types only. */
#ifndef SPARK_TUNE_BPF_EVENTS_H
#define SPARK_TUNE_BPF_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* feature_probe: one counter per program type that fired. */
enum feature_probe_slot {
	FEATURE_PROBE_TP_BTF = 0,
	FEATURE_PROBE_RAW_TP = 1,
	FEATURE_PROBE_TP = 2,
	FEATURE_PROBE_SLOTS = 3,
};

#endif
