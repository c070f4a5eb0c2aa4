/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * tunnel.bpf.h - opening one level of encapsulation (kernel side only).
 *
 * Same contract as parse.bpf.h. decap() looks at a parsed outer packet; when it is a
 * tunnel we open (VXLAN, Geneve, GRE, IP-in-IP, 6in4, 4in6, ip6ip6) it copies the outer
 * header into p->tun and returns the ethertype of what follows (ETH_P_TEB when an
 * Ethernet header follows), so the caller parses the inner packet as the flow.
 * 0 means "not a tunnel we open": the outer packet is the flow.
 * WireGuard cannot be opened: parse_wireguard() only records its receiver index.
 *
 * The including file defines `cfg` (struct mermin_config, .rodata).
 */
#ifndef __MERMIN_TUNNEL_BPF_H
#define __MERMIN_TUNNEL_BPF_H

#include "parse.bpf.h"

#define GRE_CSUM 0x8000
#define GRE_ROUTING 0x4000
#define GRE_KEY 0x2000
#define GRE_SEQ 0x1000
#define GRE_VERSION 0x0007

/* WireGuard fields are little endian */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define le32(x) (x)
#else
#define le32(x) __builtin_bswap32(x)
#endif

struct gre_base {
	__be16 flags;
	__be16 proto;
};

struct vxlan_hdr_ {
	__u8 flags;		/* 0x08: the VNI is valid */
	__u8 reserved[3];
	__be32 vni;		/* VNI << 8 */
};

struct geneve_hdr_ {
	__u8 ver_optlen;	/* version (2 bits), options length in 4-byte words (6 bits) */
	__u8 flags;
	__be16 proto;
	__be32 vni;		/* VNI << 8 */
};

static __always_inline int inner_ethertype_ok(int proto)
{
	return proto == ETH_P_IP || proto == ETH_P_IPV6 || proto == ETH_P_TEB;
}

/* GRE version 0 (RFC 2784/2890): optional checksum, key, sequence number */
static __always_inline int parse_gre(struct cursor *c, __u32 *key)
{
	struct gre_base *h = cursor_ptr(c, sizeof(*h));
	__u32 len = sizeof(*h), koff;
	__u8 *opt;
	__u16 flags;
	int proto;

	if (!h)
		return 0;	/* a GRE flow we cannot open, not an error */
	flags = bpf_ntohs(h->flags);
	proto = bpf_ntohs(h->proto);
	if ((flags & (GRE_ROUTING | GRE_VERSION)) || !inner_ethertype_ok(proto))
		return 0;	/* PPTP, source routing, ERSPAN, MPLS...: stays a GRE flow */
	if (flags & GRE_CSUM)
		len += 4;
	if (flags & GRE_KEY)
		len += 4;
	if (flags & GRE_SEQ)
		len += 4;
	if (!cursor_ptr(c, len))
		return ERR(TRUNCATED);
	if (flags & GRE_KEY) {	/* after the base header and the checksum, if any */
		koff = (flags & GRE_CSUM) ? 8 : 4;
		opt = cursor_ptr(c, koff + 4);
		if (!opt)
			return ERR(TRUNCATED);
		*key = bpf_ntohl(*(__be32 *)(opt + koff));
	}
	cursor_skip(c, len);
	return proto;
}

static __always_inline int parse_vxlan(struct cursor *c, __u32 *vni)
{
	struct vxlan_hdr_ *h = cursor_ptr(c, sizeof(*h));

	if (!h)
		return ERR(TRUNCATED);
	if (!(h->flags & 0x08))
		return 0;	/* no valid VNI: not VXLAN, stays a UDP flow */
	*vni = bpf_ntohl(h->vni) >> 8;
	cursor_skip(c, sizeof(*h));
	return ETH_P_TEB;
}

static __always_inline int parse_geneve(struct cursor *c, __u32 *vni)
{
	struct geneve_hdr_ *h = cursor_ptr(c, sizeof(*h));
	__u32 len;
	int proto;

	if (!h)
		return ERR(TRUNCATED);
	proto = bpf_ntohs(h->proto);
	if ((h->ver_optlen >> 6) || !inner_ethertype_ok(proto))
		return 0;	/* unknown version or payload: stays a UDP flow */
	/* verifier: optlen is 6 bits, so len <= 8 + 252 bounds the length check */
	len = sizeof(*h) + (h->ver_optlen & 0x3f) * 4;
	if (!cursor_ptr(c, len))
		return ERR(TRUNCATED);
	*vni = bpf_ntohl(h->vni) >> 8;
	cursor_skip(c, len);
	return proto;
}

/* the outer packet becomes the tunnel; the inner one will overwrite the flow fields */
static __always_inline void record_tunnel(struct packet *p, __u8 type, __u32 id)
{
	copy_addr16(p->tun.src, p->key.addr_a);
	copy_addr16(p->tun.dst, p->key.addr_b);
	p->tun.sport = p->key.port_a;
	p->tun.dport = p->key.port_b;
	p->tun.id = id;
	p->tun.type = type;
	p->tun.ip_version = p->key.ip_version;
	p->tun.protocol = p->key.protocol;
	p->outer_len = p->ip_len;
}

/* open one tunnel level; returns the inner ethertype, 0 (no tunnel) or -reason */
static __always_inline int decap(struct cursor *c, struct packet *p)
{
	__u8 v4 = p->key.ip_version == 4;
	__u32 id = 0;
	__u8 type;
	int next;

	switch (p->key.protocol) {
	case IPPROTO_IPIP:
		next = ETH_P_IP;
		type = v4 ? MERMIN_TUNNEL_IPIP : MERMIN_TUNNEL_IP4IN6;
		break;
	case IPPROTO_IPV6:
		next = ETH_P_IPV6;
		type = v4 ? MERMIN_TUNNEL_SIT : MERMIN_TUNNEL_IP6IP6;
		break;
	case IPPROTO_GRE:
		next = parse_gre(c, &id);
		type = MERMIN_TUNNEL_GRE;
		break;
	case IPPROTO_UDP:
		if (p->key.port_b == cfg.vxlan_port) {
			next = parse_vxlan(c, &id);
			type = MERMIN_TUNNEL_VXLAN;
		} else if (p->key.port_b == cfg.geneve_port) {
			next = parse_geneve(c, &id);
			type = MERMIN_TUNNEL_GENEVE;
		} else {
			return 0;
		}
		break;
	default:
		return 0;
	}
	if (next > 0)
		record_tunnel(p, type, id);
	return next;
}

/*
 * WireGuard (UDP, cfg.wireguard_port on either side) is encrypted: the UDP flow is
 * the flow, and the receiver index names the session (message types 2, 3, 4).
 */
static __always_inline void parse_wireguard(struct cursor *c, struct packet *p)
{
	__u32 *msg;

	if (p->key.protocol != IPPROTO_UDP || !cfg.wireguard_port ||
	    (p->key.port_a != cfg.wireguard_port && p->key.port_b != cfg.wireguard_port))
		return;
	msg = cursor_ptr(c, 12);
	if (!msg)
		return;
	switch (le32(msg[0])) {
	case 2:				/* handshake response: sender, receiver */
		p->spi = le32(msg[2]);
		break;
	case 3:				/* cookie reply: receiver */
	case 4:				/* transport data: receiver */
		p->spi = le32(msg[1]);
		break;
	}
}

#endif /* __MERMIN_TUNNEL_BPF_H */
