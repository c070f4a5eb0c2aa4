/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * maps.bpf.h - every map of the datapath, in one place (kernel side only).
 *
 * FLOWS     hash        struct flow_key -> struct flow_value (flow.h)
 *           One entry per conversation, both directions (normalized key). A plain
 *           (not per-CPU) hash: the agent must read one coherent value per flow and
 *           both directions of a flow can run on different CPUs; counters are added
 *           with atomic instructions. Preallocated, so the hot path never allocates
 *           and an insert only fails when the table is full (-> MAP_FULL counter).
 *           Default 65536 entries (~20 MiB); the loader resizes it with
 *           bpf_map__set_max_entries() from the agent's settings.
 * COUNTERS  percpu array  __u32 enum mermin_counter -> __u64 packets
 *           Per-CPU so counting never contends; the agent sums the CPUs.
 * FRAGS     LRU hash    struct frag_key -> struct frag_value
 *           (src, dst, protocol, IP id) of a fragmented datagram -> the ports its
 *           first fragment carried, so later fragments join the same flow. LRU
 *           because fragments are short-lived and nobody deletes them: old
 *           datagrams age out by themselves. Default 8192 entries; resizable.
 * SCRATCH   percpu array  0 -> struct scratch
 *           Per-CPU working memory of one packet (a program runs to completion on
 *           its CPU, so nobody else touches it meanwhile): the parsed packet, kept
 *           out of the stack so the verifier does not track (and fork on) each of
 *           its fields, and a new flow's value, built here before its insert (too
 *           big for the 512-byte stack, and the verifier allows atomic adds at a
 *           variable offset, dir[side], only into map values). Also the CPU's
 *           clock cache (see clock_tick() in mermin.bpf.c).
 */
#ifndef __MERMIN_MAPS_BPF_H
#define __MERMIN_MAPS_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"
#include "parse.bpf.h"

#define MERMIN_FLOWS_DEFAULT 65536
#define MERMIN_FRAGS_DEFAULT 8192

/* Identity of one fragmented datagram; addresses as in flow_key (network order). */
struct frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;		/* IPv4 identification (16 bit) or IPv6 fragment id (32 bit) */
	__u8 protocol;
	__u8 ip_version;
	__u8 _pad[2];
};

/* What the first fragment told us: its ports as sent (source, destination). */
struct frag_value {
	__u16 sport;
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MERMIN_FLOWS_DEFAULT);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} FLOWS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MERMIN_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} COUNTERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MERMIN_FRAGS_DEFAULT);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
} FRAGS SEC(".maps");

/* this CPU's last CLOCK_BOOTTIME reading and the jiffy it was taken in */
struct clock_cache {
	__u64 jiffies;
	__u64 ns;
};

struct scratch {
	struct packet pkt;
	struct flow_value val;
	struct clock_cache clock;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} SCRATCH SEC(".maps");

/* count one packet under counter @idx (per-CPU slot: a plain add is race free) */
static __always_inline void count(__u32 idx)
{
	__u64 *slot = bpf_map_lookup_elem(&COUNTERS, &idx);

	if (slot)
		*slot += 1;
}

#endif /* __MERMIN_MAPS_BPF_H */
