/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * clock.bpf.h - flow timestamps (kernel side only). The including file defines `cfg`.
 *
 * Replay: the capture time BPF_PROG_TEST_RUN passes in __sk_buff.tstamp (read once,
 * in the program itself: a global function may not read ctx fields at an offset).
 * Live: CLOCK_BOOTTIME. Reading it costs ~30 ns per call on some virtual machines
 * (more than all the rest of a packet), so per packet we read it at most once per
 * jiffy per CPU (clock_tick: last_seen has the kernel tick's resolution, 1-10 ms);
 * first_seen and the SYN / SYN-ACK times, which need precision, read it exactly.
 */
#ifndef __MERMIN_CLOCK_BPF_H
#define __MERMIN_CLOCK_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.bpf.h"

/* replay: BPF_PROG_TEST_RUN's __sk_buff.tstamp, copied here by clock_start() */
static __always_inline void clock_start(struct __sk_buff *skb, struct clock_cache *cc)
{
	if (cfg.replay)
		cc->ns = skb->tstamp;
}

/* the precise time: first_seen, SYN and SYN-ACK */
static __always_inline __u64 clock_exact(struct clock_cache *cc)
{
	return cfg.replay ? cc->ns : bpf_ktime_get_boot_ns();
}

/* the time at most one jiffy old: last_seen of every packet */
static __always_inline __u64 clock_tick(struct clock_cache *cc)
{
	__u64 jiffies;

	if (cfg.replay)
		return cc->ns;
	jiffies = bpf_jiffies64();
	if (jiffies != cc->jiffies) {
		cc->jiffies = jiffies;
		cc->ns = bpf_ktime_get_boot_ns();
	}
	return cc->ns;
}

#endif /* __MERMIN_CLOCK_BPF_H */
