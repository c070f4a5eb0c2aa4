/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * parse.bpf.h - bounded, verifier-safe header walkers (kernel side only).
 *
 * Contract of every parse_<hdr>(struct cursor *c, struct packet *p):
 *   - it reads one header at c->data + c->off, after checking (cursor_ptr) that the
 *     bytes it reads lie before c->end, and leaves c->off just past that header;
 *   - it returns the next protocol (an ethertype or an IP protocol number, host
 *     order, >= 0) or a negative enum mermin_counter, -MERMIN_CNT_UNPARSED_*, that
 *     says why the packet cannot be parsed;
 *   - it fills struct packet with the flow.h byte order: addresses as on the wire
 *     (network order), every other integer in host order.
 * Nothing here writes to the packet. Loops have a named bound (MAX_*), and every
 * variable header length is bounded by its field width before it moves the cursor.
 */
#ifndef __MERMIN_PARSE_BPF_H
#define __MERMIN_PARSE_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "flow.h"

#define MAX_VLAN_TAGS 3		/* 802.1Q / 802.1ad tags walked per Ethernet header */
#define MAX_IPV6_EXT 8		/* IPv6 extension headers walked per IPv6 header */
#define MAX_HDR_OFF 0xfff	/* headers must start in the first 4 KiB (see cursor_ptr) */

#define ETH_P_QINQ_OLD 0x9100	/* pre-standard QinQ outer tag */

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define ERR(reason) (-(int)MERMIN_CNT_UNPARSED_##reason)

enum frag_kind {
	FRAG_NONE = 0,		/* a whole datagram (or an atomic fragment) */
	FRAG_FIRST = 1,		/* offset 0, more fragments follow: carries the L4 header */
	FRAG_LATER = 2,		/* offset > 0: no L4 header */
};

/*
 * Where parsing stands: the next header starts at data + *off. *off lives in the per-CPU
 * scratch value (struct packet), not on the stack; see cursor_ptr() for why. As a "next
 * protocol", ETH_P_TEB (0x6558) means "an Ethernet header follows".
 */
struct cursor {
	void *data;
	void *end;
	__u32 *off;
};

/* The outer header of a decapsulated packet: what flow_value records as the tunnel. */
struct tunnel_info {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;		/* VNI / GRE key */
	__u16 sport;
	__u16 dport;
	__u8 type;		/* enum mermin_tunnel, 0 = not tunnelled */
	__u8 ip_version;
	__u8 protocol;
	__u8 _pad;
};

/*
 * Everything one packet tells us, filled by the parsers, read by the flow update.
 * It lives in the per-CPU SCRATCH map (maps.bpf.h), not on the stack.
 */
struct packet {
	struct flow_key key;	/* as sent: addr_a/port_a = source, addr_b/port_b = destination */
	struct tunnel_info tun;
	__u32 ip_len;		/* IP header + payload of the (inner) packet */
	__u32 outer_len;	/* IP header + payload of the outer packet when tunnelled */
	__u32 flow_label;
	__u32 spi;		/* ESP/AH SPI, WireGuard receiver index */
	__u32 tcp_seq;
	__u32 payload_len;	/* TCP payload bytes */
	__u32 frag_id;
	__u32 off;		/* parse cursor offset from the start of the frame */
	__u32 ifindex;
	__u32 segs;		/* packets this skb stands for (GSO/GRO), >= 1 */
	__u16 hdr_len;		/* IP header(s) + L4 header of the (inner) packet */
	__u16 vlan_id;
	__u8 dscp;
	__u8 ecn;
	__u8 ttl;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 frag;		/* enum frag_kind */
	__u8 hook;		/* enum mermin_hook */
	__u8 side;		/* after normalization: 0 if the sender is side a */
	__u8 has_icmp;
};

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;	/* offset << 3 | M */
	__be32 id;
};

struct icmp_any {		/* common start of ICMP and ICMPv6 */
	__u8 type;
	__u8 code;
	__be16 csum;
	__be16 id;		/* query messages only */
	__be16 seq;
};

/*
 * Pointer to @len readable bytes at the cursor, or NULL when they run past the end.
 * verifier: the walkers move the cursor by variable lengths (IHL, extension headers,
 * options); a packet pointer or a stack offset would carry a different range on every
 * path, no two paths would be pruned as equal and the state count explodes (past the
 * 1M-instruction limit). So the offset lives in map memory, whose contents the
 * verifier does not track, and is re-read here through volatile (clang may not
 * forward the stored value): every path then sees the same [0, MAX_HDR_OFF] range.
 */
static __always_inline void *cursor_ptr(struct cursor *c, __u32 len)
{
	__u32 off = *(volatile __u32 *)c->off;
	void *pos;

	if (off > MAX_HDR_OFF)
		return NULL;
	pos = c->data + off;
	if (pos + len > c->end)
		return NULL;
	return pos;
}

static __always_inline void cursor_skip(struct cursor *c, __u32 len)
{
	*c->off += len;
}

/* write an IPv4 address into a 16-byte address slot, zero-padded (flow.h) */
static __always_inline void set_addr4(__u8 *dst, __be32 addr)
{
	__u32 *d = (__u32 *)dst;

	d[0] = addr;
	d[1] = 0;
	d[2] = 0;
	d[3] = 0;
}

static __always_inline void copy_addr16(__u8 *dst, const void *src)
{
	const __u32 *s = src;
	__u32 *d = (__u32 *)dst;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

static __always_inline int is_vlan(__u16 proto)
{
	return proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == ETH_P_QINQ_OLD;
}

/* ethernet + up to MAX_VLAN_TAGS tags; records the outermost VLAN id; returns the ethertype */
static __always_inline int parse_eth(struct cursor *c, struct packet *p)
{
	struct ethhdr *eth = cursor_ptr(c, sizeof(*eth));
	struct vlan_tag *tag;
	__u16 proto;
	int i;

	if (!eth)
		return ERR(TRUNCATED);
	proto = bpf_ntohs(eth->h_proto);
	cursor_skip(c, sizeof(*eth));

	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (!is_vlan(proto))
			return proto;
		tag = cursor_ptr(c, sizeof(*tag));
		if (!tag)
			return ERR(TRUNCATED);
		if (!p->vlan_id)
			p->vlan_id = bpf_ntohs(tag->tci) & 0x0fff;
		proto = bpf_ntohs(tag->proto);
		cursor_skip(c, sizeof(*tag));
	}
	return is_vlan(proto) ? ERR(TOO_DEEP) : proto;
}

/* the IPv4 header fields into the packet; @hlen: its length (IHL * 4) */
static __always_inline void fill_ipv4(struct packet *p, const struct iphdr *ip, __u32 hlen)
{
	__u16 frag = bpf_ntohs(ip->frag_off);

	set_addr4(p->key.addr_a, ip->saddr);
	set_addr4(p->key.addr_b, ip->daddr);
	p->key.ip_version = 4;
	p->key.protocol = ip->protocol;
	p->ip_len = bpf_ntohs(ip->tot_len);
	p->hdr_len = hlen;
	p->dscp = ip->tos >> 2;
	p->ecn = ip->tos & 3;
	p->ttl = ip->ttl;
	p->flow_label = 0;
	p->frag = (frag & 0x1fff) ? FRAG_LATER : (frag & 0x2000) ? FRAG_FIRST : FRAG_NONE;
	p->frag_id = bpf_ntohs(ip->id);
}

/* IPv4 honouring IHL (options skipped); returns the IP protocol */
static __always_inline int parse_ipv4(struct cursor *c, struct packet *p)
{
	struct iphdr *ip = cursor_ptr(c, sizeof(*ip));
	__u32 hlen;

	if (!ip)
		return ERR(TRUNCATED);
	if (ip->version != 4 || ip->ihl < 5)
		return ERR(PROTOCOL);
	/* verifier: ihl is a 4-bit field, so hlen <= 60 bounds the length check */
	hlen = ip->ihl * 4;
	if (bpf_ntohs(ip->tot_len) < hlen)
		return ERR(PROTOCOL);
	if (!cursor_ptr(c, hlen))
		return ERR(TRUNCATED);
	fill_ipv4(p, ip, hlen);
	cursor_skip(c, hlen);
	return ip->protocol;
}

/* hop-by-hop, routing (incl. segment routing) and destination options: skip by length */
static __always_inline int skip_ipv6_opts(struct cursor *c, struct packet *p)
{
	struct ipv6_opt_hdr *h = cursor_ptr(c, sizeof(*h));
	__u32 len;

	if (!h)
		return ERR(TRUNCATED);
	/* verifier: hdrlen is 8 bits, so len <= 2048 bounds the length check */
	len = ((__u32)h->hdrlen + 1) * 8;
	if (!cursor_ptr(c, len))
		return ERR(TRUNCATED);
	cursor_skip(c, len);
	p->hdr_len += len;
	return h->nexthdr;
}

static __always_inline int parse_ipv6_frag(struct cursor *c, struct packet *p)
{
	struct ipv6_frag *h = cursor_ptr(c, sizeof(*h));
	__u16 off;

	if (!h)
		return ERR(TRUNCATED);
	off = bpf_ntohs(h->frag_off);
	p->frag = (off & 0xfff8) ? FRAG_LATER : (off & 1) ? FRAG_FIRST : FRAG_NONE;
	p->frag_id = bpf_ntohl(h->id);
	cursor_skip(c, sizeof(*h));
	p->hdr_len += sizeof(*h);
	return h->nexthdr;
}

/*
 * The extension-header chain: walks at most MAX_IPV6_EXT headers and returns the
 * upper-layer protocol. AH ends the walk (its flow is an AH flow, see parse_l4);
 * so does a non-first fragment, whose payload is not a header.
 */
static __always_inline int parse_ipv6_ext(struct cursor *c, struct packet *p, int nh)
{
	int i;

	for (i = 0; i < MAX_IPV6_EXT; i++) {
		switch (nh) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			nh = skip_ipv6_opts(c, p);
			break;
		case IPPROTO_FRAGMENT:
			nh = parse_ipv6_frag(c, p);
			if (nh >= 0 && p->frag == FRAG_LATER)
				return nh;
			break;
		default:
			return nh;
		}
		if (nh < 0)
			return nh;
	}
	if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	    nh == IPPROTO_FRAGMENT)
		return ERR(TOO_DEEP);
	return nh;
}

/* the fixed IPv6 header into the packet; @avail: bytes from this header to the end */
static __always_inline void fill_ipv6(struct packet *p, const struct ipv6hdr *ip6, __u32 avail)
{
	__u32 payload = bpf_ntohs(ip6->payload_len);

	copy_addr16(p->key.addr_a, &ip6->saddr);
	copy_addr16(p->key.addr_b, &ip6->daddr);
	p->key.ip_version = 6;
	p->key.protocol = ip6->nexthdr;
	p->dscp = (ip6->priority << 2) | (ip6->flow_lbl[0] >> 6);
	p->ecn = (ip6->flow_lbl[0] >> 4) & 3;
	p->flow_label = ((__u32)(ip6->flow_lbl[0] & 0x0f) << 16) |
			((__u32)ip6->flow_lbl[1] << 8) | ip6->flow_lbl[2];
	p->ttl = ip6->hop_limit;
	/* a jumbogram says 0 here: take what the packet really holds */
	if (!payload && avail > 40)
		payload = avail - 40;
	p->ip_len = 40 + payload;
	p->hdr_len = 40;
	p->frag = FRAG_NONE;
	p->frag_id = 0;
}

/* IPv6 and its extension headers; returns the upper-layer protocol */
static __always_inline int parse_ipv6(struct cursor *c, struct packet *p, __u32 skb_len)
{
	struct ipv6hdr *ip6 = cursor_ptr(c, sizeof(*ip6));
	int nh;

	if (!ip6)
		return ERR(TRUNCATED);
	if (ip6->version != 6)
		return ERR(PROTOCOL);
	fill_ipv6(p, ip6, skb_len - *c->off);
	cursor_skip(c, sizeof(*ip6));

	nh = parse_ipv6_ext(c, p, ip6->nexthdr);
	if (nh >= 0)
		p->key.protocol = nh;
	return nh;
}

static __always_inline int parse_l3(struct cursor *c, struct packet *p, int ethertype,
				    __u32 skb_len)
{
	if (ethertype == ETH_P_IP)
		return parse_ipv4(c, p);
	if (ethertype == ETH_P_IPV6)
		return parse_ipv6(c, p, skb_len);
	return ERR(ETHERTYPE);
}

static __always_inline void fill_tcp(struct packet *p, const struct tcphdr *th, __u32 doff)
{
	p->key.port_a = bpf_ntohs(th->source);
	p->key.port_b = bpf_ntohs(th->dest);
	p->tcp_flags = ((__u8 *)th)[13];
	p->tcp_seq = bpf_ntohl(th->seq);
	p->hdr_len += doff;
	p->payload_len = p->ip_len > p->hdr_len ? p->ip_len - p->hdr_len : 0;
}

static __always_inline int parse_tcp(struct cursor *c, struct packet *p)
{
	struct tcphdr *th = cursor_ptr(c, sizeof(*th));
	__u32 doff;

	if (!th)
		return ERR(TRUNCATED);
	doff = th->doff * 4;
	if (doff < sizeof(*th))
		return ERR(PROTOCOL);
	fill_tcp(p, th, doff);
	cursor_skip(c, sizeof(*th));
	return 0;
}

/* UDP, UDP-Lite and SCTP: the ports are the first 4 bytes of a header of hlen bytes */
static __always_inline int parse_ports(struct cursor *c, struct packet *p, __u32 hlen)
{
	__be16 *ports = cursor_ptr(c, hlen);

	if (!ports)
		return ERR(TRUNCATED);
	p->key.port_a = bpf_ntohs(ports[0]);
	p->key.port_b = bpf_ntohs(ports[1]);
	p->hdr_len += hlen;
	cursor_skip(c, hlen);
	return 0;
}

static __always_inline int icmp_is_query(__u8 proto, __u8 type)
{
	if (proto == IPPROTO_ICMPV6)
		return type == 128 || type == 129;	/* echo request / reply */
	/* echo, timestamp, information, address mask: requests and replies */
	return type == 0 || type == 8 || (type >= 13 && type <= 18);
}

/* ICMP/ICMPv6: type/code to the value; a query's identifier goes in both ports */
static __always_inline int parse_icmp(struct cursor *c, struct packet *p)
{
	struct icmp_any *h = cursor_ptr(c, 4);

	if (!h)
		return ERR(TRUNCATED);
	p->icmp_type = h->type;
	p->icmp_code = h->code;
	p->has_icmp = 1;
	if (!icmp_is_query(p->key.protocol, h->type))
		return 0;
	h = cursor_ptr(c, sizeof(*h));
	if (!h)
		return ERR(TRUNCATED);
	p->key.port_a = bpf_ntohs(h->id);
	p->key.port_b = p->key.port_a;
	return 0;
}

/* ESP (SPI at 0) and AH (SPI at 4): flows of their own, the payload is opaque */
static __always_inline int parse_spi(struct cursor *c, struct packet *p, __u32 off)
{
	__u8 *h = cursor_ptr(c, off + 4);

	if (!h)
		return ERR(TRUNCATED);
	p->spi = bpf_ntohl(*(__be32 *)(h + off));
	return 0;
}

/* the transport header (none for a non-first fragment); resets what the last layer set */
static __always_inline int parse_l4(struct cursor *c, struct packet *p)
{
	p->key.port_a = 0;
	p->key.port_b = 0;
	p->spi = 0;
	p->tcp_flags = 0;
	p->payload_len = 0;
	p->has_icmp = 0;

	switch (p->key.protocol) {
	case IPPROTO_TCP:
		return parse_tcp(c, p);
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
		return parse_ports(c, p, sizeof(struct udphdr));
	case IPPROTO_SCTP:
		return parse_ports(c, p, 12);
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return parse_icmp(c, p);
	case IPPROTO_ESP:
		return parse_spi(c, p, 0);
	case IPPROTO_AH:
		return parse_spi(c, p, 4);
	default:
		return 0;
	}
}

#endif /* __MERMIN_PARSE_BPF_H */
