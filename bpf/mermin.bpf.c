// SPDX-License-Identifier: GPL-2.0-only
/*
 * mermin.bpf.c - TC/TCX classifiers that count every packet into per-flow entries.
 *
 * Per packet: parse (parse.bpf.h, tunnel.bpf.h) -> fragments (FRAGS) -> normalize the
 * key -> upsert FLOWS (dedup by owning hook) -> one outcome counter. The programs only
 * observe: they never drop or change a packet and always return TC_ACT_UNSPEC (the
 * same value as TCX_NEXT), so the next program and the stack carry on.
 * docs/datapath.md describes the rules; flow.h the key/value layout.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"

/*
 * Load-time settings. `const volatile` puts them in .rodata: the loader writes them
 * between open and load, and the verifier then sees constants and removes the code
 * of disabled branches (cfg.replay selects one clock, for instance).
 */
const volatile struct mermin_config cfg = {
	.vxlan_port = 4789,
	.geneve_port = 6081,
	.wireguard_port = 51820,
	.replay = 0,
};

/*
 * Benchmark only (bench/bench_datapath.py): when set, each packet's key gets a fresh
 * value, so every run of a repeated BPF_PROG_TEST_RUN inserts a new flow. It is 0 in
 * production, where the verifier removes the code it guards.
 */
const volatile __u8 bench_new_flows = 0;
__u32 bench_seq;

#include "maps.bpf.h"
#include "tunnel.bpf.h"
#include "clock.bpf.h"
#include "tcp.bpf.h"

#define LAYERS 2		/* the packet, and the packet inside one tunnel */
#define PULL_LEN 256		/* header bytes that must be linear for parsing */

char LICENSE[] SEC("license") = "GPL";

/*
 * Headers can sit in paged data (GRO, tunnels). Make the first PULL_LEN bytes linear
 * so direct packet access can read them; this moves bytes between skb areas and never
 * changes the packet's content.
 */
static __always_inline void pull_headers(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u32 want = skb->len < PULL_LEN ? skb->len : PULL_LEN;

	if (data + want > end)
		bpf_skb_pull_data(skb, want);
}

/* a UDP port that needs the general walk: a tunnel to open, or WireGuard */
static __always_inline int special_udp(const struct packet *p)
{
	return p->key.port_b == cfg.vxlan_port || p->key.port_b == cfg.geneve_port ||
	       p->key.port_a == cfg.wireguard_port || p->key.port_b == cfg.wireguard_port;
}

/*
 * The common case at fixed offsets: untagged Ethernet, IPv4 without options or IPv6
 * without extension headers, not a fragment, TCP or plain UDP. Its loads do not wait
 * on the cursor (a load from SCRATCH per header), which makes it ~10% faster. Returns
 * 1 when the packet is fully parsed, 0 to take the general walk, which rewrites every
 * field this one may have set.
 */
static __always_inline int parse_fast(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct ipv6hdr *ip6 = data + sizeof(*eth);
	struct udphdr *uh;
	struct tcphdr *th;
	void *l4;

	if ((void *)(ip + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		if (*(__u8 *)ip != 0x45 || (ip->frag_off & bpf_htons(0x3fff)) ||
		    bpf_ntohs(ip->tot_len) < sizeof(*ip))
			return 0;	/* options, fragment or bad length */
		fill_ipv4(p, ip, sizeof(*ip));
		l4 = ip + 1;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		if ((void *)(ip6 + 1) > end || ip6->version != 6)
			return 0;
		fill_ipv6(p, ip6, skb->len - sizeof(*eth));
		l4 = ip6 + 1;
	} else {
		return 0;
	}
	if (p->key.protocol == IPPROTO_TCP) {
		th = l4;
		if ((void *)(th + 1) > end || th->doff < 5)
			return 0;
		fill_tcp(p, th, th->doff * 4);
		return 1;
	}
	if (p->key.protocol == IPPROTO_UDP) {
		uh = l4;
		if ((void *)(uh + 1) > end)
			return 0;
		p->key.port_a = bpf_ntohs(uh->source);
		p->key.port_b = bpf_ntohs(uh->dest);
		p->hdr_len += sizeof(*uh);
		return !special_udp(p);
	}
	return 0;
}

/* walk the headers of this packet and, when it is a tunnel, of the packet inside */
static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *p)
{
	struct cursor c = {
		.data = (void *)(long)skb->data,
		.end = (void *)(long)skb->data_end,
		.off = &p->off,
	};
	int next = ETH_P_TEB;	/* a TC packet starts with its Ethernet header */
	int layer, ret;

	/* verifier: a real (bounded) loop keeps one copy of the walkers for both layers */
#pragma clang loop unroll(disable)
	for (layer = 0; layer < LAYERS; layer++) {
		if (next == ETH_P_TEB)
			next = parse_eth(&c, p);
		if (next < 0)
			return next;
		next = parse_l3(&c, p, next, skb->len);
		if (next < 0)
			return next;
		if (p->frag == FRAG_LATER)
			return 0;	/* no transport header in this fragment */
		ret = parse_l4(&c, p);
		if (ret < 0)
			return ret;
		parse_wireguard(&c, p);
		if (layer > 0 || p->frag)
			return 0;	/* one tunnel level; a fragmented outer stays a flow */
		next = decap(&c, p);
		if (next <= 0)
			return next;
	}
	return 0;
}

static __always_inline void frag_key_of(struct frag_key *fk, const struct packet *p)
{
	copy_addr16(fk->src, p->key.addr_a);
	copy_addr16(fk->dst, p->key.addr_b);
	fk->id = p->frag_id;
	fk->protocol = p->key.protocol;
	fk->ip_version = p->key.ip_version;
	fk->_pad[0] = 0;
	fk->_pad[1] = 0;
}

/* first fragment: remember its ports; later fragment: take them, or give up */
static __always_inline int handle_fragment(struct packet *p)
{
	struct frag_value fv = {}, *found;
	struct frag_key fk;

	frag_key_of(&fk, p);
	if (p->frag == FRAG_FIRST) {
		fv.sport = p->key.port_a;
		fv.dport = p->key.port_b;
		if (bpf_map_update_elem(&FRAGS, &fk, &fv, BPF_ANY))
			count(MERMIN_CNT_FRAG_MAP_FULL);	/* side note: the packet still counts */
		return 0;
	}
	found = bpf_map_lookup_elem(&FRAGS, &fk);
	if (!found)
		return -MERMIN_CNT_FRAG_UNMATCHED;
	p->key.port_a = found->sport;
	p->key.port_b = found->dport;
	return 0;
}

/* Community ID order: address bytes, then port; returns <0, 0, >0 like memcmp */
static __always_inline int endpoint_cmp(const struct flow_key *k)
{
	const __u32 *a = (const __u32 *)k->addr_a, *b = (const __u32 *)k->addr_b;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++) {
		if (a[i] != b[i])
			return bpf_ntohl(a[i]) < bpf_ntohl(b[i]) ? -1 : 1;
	}
	return (int)k->port_a - (int)k->port_b;
}

/* make the lower endpoint side a; returns which side sent the packet */
static __always_inline __u8 normalize(struct flow_key *k)
{
	__u32 *a = (__u32 *)k->addr_a, *b = (__u32 *)k->addr_b, t;
	__u16 port;
	int i;

	if (endpoint_cmp(k) <= 0)
		return 0;
#pragma unroll
	for (i = 0; i < 4; i++) {
		t = a[i];
		a[i] = b[i];
		b[i] = t;
	}
	port = k->port_a;
	k->port_a = k->port_b;
	k->port_b = port;
	return 1;
}

/*
 * Dedup: the first (ifindex, hook) that sees a direction of a flow owns it; the same
 * direction seen at any other hook is a copy of a packet already counted. The hook is
 * stored before the ifindex, which marks the claim, so a reader that sees the ifindex
 * sees the hook too (x86/arm64 keep these two stores in order; volatile keeps clang
 * from swapping them).
 */
static __always_inline int owns_direction(struct flow_dir *d, const struct packet *p)
{
	if (!d->owner_ifindex) {
		*(volatile __u8 *)&d->owner_hook = p->hook;
		*(volatile __u32 *)&d->owner_ifindex = p->ifindex;
		return 1;
	}
	return d->owner_ifindex == p->ifindex && d->owner_hook == p->hook;
}

/* a copy of a counted packet can still teach us the tunnel the owner did not see */
static __always_inline void set_tunnel(struct flow_value *v, const struct packet *p)
{
	copy_addr16(v->tunnel_src, p->tun.src);
	copy_addr16(v->tunnel_dst, p->tun.dst);
	v->tunnel_id = p->tun.id;
	v->tunnel_sport = p->tun.sport;
	v->tunnel_dport = p->tun.dport;
	v->tunnel_ip_version = p->tun.ip_version;
	v->tunnel_protocol = p->tun.protocol;
	v->tunnel_type = p->tun.type;
}

/* count one packet into a flow value (in FLOWS, or a new one in SCRATCH) */
static __always_inline int flow_apply(struct clock_cache *cc, struct flow_value *v,
				      const struct packet *p, __u64 now)
{
	struct flow_dir *d = &v->dir[p->side & 1];
	__u32 extra = p->segs - 1;	/* GSO: headers of the segments after the first */

	if (!owns_direction(d, p)) {
		if (p->tun.type && !v->tunnel_type)
			set_tunnel(v, p);
		return MERMIN_CNT_DUPLICATE;
	}
	__sync_fetch_and_add(&d->packets, p->segs);
	__sync_fetch_and_add(&d->bytes, p->ip_len + extra * p->hdr_len);
	if (p->tun.type)
		__sync_fetch_and_add(&d->tunnel_bytes, p->outer_len +
				     extra * (p->outer_len - p->ip_len + p->hdr_len));
	if (now > v->last_seen_ns)
		v->last_seen_ns = now;
	d->dscp = p->dscp;
	d->ecn = p->ecn;
	d->ttl = p->ttl;
	d->flow_label = p->flow_label;
	if (p->spi)
		d->spi = p->spi;
	if (p->has_icmp) {
		d->icmp_type = p->icmp_type;
		d->icmp_code = p->icmp_code;
	}
	if (p->key.protocol == IPPROTO_TCP && p->frag != FRAG_LATER)
		tcp_update(cc, v, d, p);
	return MERMIN_CNT_COUNTED;
}

/*
 * New flow: build the value in SCRATCH and insert it only if nobody else did
 * (BPF_NOEXIST). If another CPU won the race (-EEXIST), count into its entry.
 */
static __always_inline int flow_create(struct scratch *s)
{
	const struct packet *p = &s->pkt;
	struct flow_value *nv = &s->val, *v;
	__u64 now = clock_exact(&s->clock);
	long err;

	__builtin_memset(nv, 0, sizeof(*nv));
	nv->first_seen_ns = now;
	nv->first_side = p->side;
	nv->first_hook = p->hook;
	nv->ifindex = p->ifindex;
	nv->vlan_id = p->vlan_id;
	if (p->tun.type)
		set_tunnel(nv, p);
	flow_apply(&s->clock, nv, p, now);
	/*
	 * a SYN / SYN-ACK time set by this first packet is first_seen exactly (not a second
	 * clock read), so userspace can tell the handshake opened the flow
	 */
	if (nv->tcp_syn_ns)
		nv->tcp_syn_ns = now;
	if (nv->tcp_synack_ns)
		nv->tcp_synack_ns = now;

	err = bpf_map_update_elem(&FLOWS, &p->key, nv, BPF_NOEXIST);
	if (!err)
		return MERMIN_CNT_COUNTED;
	if (err != -17 /* EEXIST */)
		return MERMIN_CNT_MAP_FULL;	/* E2BIG: table full; ENOMEM */
	v = bpf_map_lookup_elem(&FLOWS, &p->key);
	if (!v)
		return MERMIN_CNT_MAP_FULL;	/* deleted again in between: not recorded */
	return flow_apply(&s->clock, v, p, now);
}

/*
 * Everything after parsing. verifier: a global (non-static, noinline) function is
 * verified once, on its own, with *s as unknown bytes; inlined, its branches would be
 * explored again for every distinct way the parsers can finish.
 */
__noinline int flow_account(struct scratch *s)
{
	struct packet *p;
	struct flow_value *v;
	int ret;

	if (!s)
		return MERMIN_CNT_UNPARSED_PROTOCOL;	/* never: the caller passes SCRATCH */
	p = &s->pkt;
	if (p->frag) {
		ret = handle_fragment(p);
		if (ret < 0)
			return -ret;
	}
	p->side = normalize(&p->key);
	if (bench_new_flows)
		*(__u32 *)&p->key.addr_b[12] ^= bench_seq++;
	v = bpf_map_lookup_elem(&FLOWS, &p->key);
	if (!v)
		return flow_create(s);
	return flow_apply(&s->clock, v, p, clock_tick(&s->clock));
}

/* packets one skb stands for: a GSO/GRO super-packet is counted as its segments */
static __always_inline __u32 segments(struct __sk_buff *skb, const struct packet *p)
{
	__u32 segs = skb->gso_segs;

	if (segs <= 1 || p->frag ||
	    (p->key.protocol != IPPROTO_TCP && p->key.protocol != IPPROTO_UDP))
		return 1;
	return segs;
}

/*
 * Clear what the parsers may leave unwritten (cheaper than zeroing the whole struct):
 * the key padding is hashed, the rest is read even when a header is absent.
 */
static __always_inline void packet_reset(struct packet *p)
{
	*(__u16 *)p->key._pad = 0;
	p->off = 0;
	p->vlan_id = 0;
	p->tun.type = 0;
	p->spi = 0;
	p->has_icmp = 0;
	p->tcp_flags = 0;
	p->key.port_a = 0;
	p->key.port_b = 0;
}

static __always_inline int handle_packet(struct __sk_buff *skb, __u8 hook)
{
	struct scratch *s;
	struct packet *p;
	__u32 zero = 0;
	int ret;

	count(MERMIN_CNT_SEEN);
	s = bpf_map_lookup_elem(&SCRATCH, &zero);
	if (!s) {
		count(MERMIN_CNT_UNPARSED_PROTOCOL);	/* cannot happen: a 1-entry array */
		return TC_ACT_UNSPEC;
	}
	p = &s->pkt;
	packet_reset(p);
	if (skb->vlan_present)	/* the outer tag was taken off by the NIC or the stack */
		p->vlan_id = skb->vlan_tci & 0x0fff;
	pull_headers(skb);
	if (!parse_fast(skb, p)) {
		ret = parse_packet(skb, p);
		if (ret < 0) {
			count(-ret);
			return TC_ACT_UNSPEC;
		}
	}
	p->hook = hook;
	p->ifindex = skb->ifindex;
	p->segs = segments(skb, p);
	clock_start(skb, &s->clock);
	count(flow_account(s));
	return TC_ACT_UNSPEC;
}

SEC("tc")
int mermin_ingress(struct __sk_buff *skb)
{
	return handle_packet(skb, MERMIN_HOOK_INGRESS);
}

SEC("tc")
int mermin_egress(struct __sk_buff *skb)
{
	return handle_packet(skb, MERMIN_HOOK_EGRESS);
}
