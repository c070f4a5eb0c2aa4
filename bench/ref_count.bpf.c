// SPDX-License-Identifier: GPL-2.0-only
/*
 * ref_count.bpf.c - the floor the datapath is measured against (bench/bench_datapath.py).
 *
 * The least a flow counter can do: Ethernet, IPv4 or IPv6 (no options walk beyond IHL,
 * no extension headers, no VLAN, no tunnels), TCP/UDP ports, then count packets per
 * 5-tuple in a hash map (lookup, atomic add; insert with BPF_NOEXIST when new).
 * The key has the size of mermin's flow_key so the hash cost is the same.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct ref_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ref_key);
	__type(value, __u64);
} REF_FLOWS SEC(".maps");

/* bench_new_flows: a fresh key per run, as in mermin.bpf.c (0: the code is removed) */
const volatile __u8 bench_new_flows = 0;
__u32 bench_seq;

char LICENSE[] SEC("license") = "GPL";

static __always_inline int ref_ports(void *l4, void *end, __u8 proto, struct ref_key *k)
{
	__be16 *ports = l4;

	k->proto = proto;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if ((void *)(ports + 2) > end)
		return -1;
	k->sport = bpf_ntohs(ports[0]);
	k->dport = bpf_ntohs(ports[1]);
	return 0;
}

SEC("tc")
int ref_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ref_key k = {};
	__u64 one = 1, *n;

	if ((void *)(eth + 1) > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return TC_ACT_UNSPEC;
		__builtin_memcpy(k.src, &ip->saddr, 4);
		__builtin_memcpy(k.dst, &ip->daddr, 4);
		if (ref_ports((void *)ip + ip->ihl * 4, end, ip->protocol, &k))
			return TC_ACT_UNSPEC;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return TC_ACT_UNSPEC;
		__builtin_memcpy(k.src, &ip6->saddr, 16);
		__builtin_memcpy(k.dst, &ip6->daddr, 16);
		if (ref_ports(ip6 + 1, end, ip6->nexthdr, &k))
			return TC_ACT_UNSPEC;
	} else {
		return TC_ACT_UNSPEC;
	}

	if (bench_new_flows)
		*(__u32 *)&k.dst[12] ^= bench_seq++;
	n = bpf_map_lookup_elem(&REF_FLOWS, &k);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&REF_FLOWS, &k, &one, BPF_NOEXIST);
	return TC_ACT_UNSPEC;
}
