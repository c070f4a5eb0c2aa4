/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow.h - the one ABI between the kernel program and the Python agent.
 *
 * Owned by both sides: fixed-width __u* types only, no kernel includes.
 * The Python side derives sizes and offsets from the BTF of the built
 * object (mermin.datapath.abi) and a test checks them, so nothing here is
 * copied by hand into Python.
 *
 * Byte order: addresses are stored as on the wire (network order); every
 * other integer is host order.
 *
 * Bump MERMIN_ABI_VERSION whenever a struct below changes: pinned maps live
 * under /sys/fs/bpf/mermin_v<MERMIN_ABI_VERSION> so an agent never reads a
 * map written by a program of another layout.
 */
#ifndef __MERMIN_FLOW_H
#define __MERMIN_FLOW_H

#include <linux/types.h>

#define MERMIN_ABI_VERSION 1

/* Hook that saw a packet. */
enum mermin_hook {
	MERMIN_HOOK_INGRESS = 0,
	MERMIN_HOOK_EGRESS = 1,
};

/* Tunnel (encapsulation) recorded beside a decapsulated flow. */
enum mermin_tunnel {
	MERMIN_TUNNEL_NONE = 0,
	MERMIN_TUNNEL_VXLAN = 1,
	MERMIN_TUNNEL_GENEVE = 2,
	MERMIN_TUNNEL_GRE = 3,
	MERMIN_TUNNEL_IPIP = 4,   /* IPv4 in IPv4 */
	MERMIN_TUNNEL_SIT = 5,    /* IPv6 in IPv4 (6in4) */
	MERMIN_TUNNEL_IP4IN6 = 6, /* IPv4 in IPv6 (4in6) */
	MERMIN_TUNNEL_IP6IP6 = 7, /* IPv6 in IPv6 */
};

/* Observer's view of a TCP connection (string forms live in Python). */
enum mermin_tcp_state {
	MERMIN_TCP_CLOSED = 0,
	MERMIN_TCP_LISTEN = 1,
	MERMIN_TCP_SYN_SENT = 2,
	MERMIN_TCP_SYN_RECEIVED = 3,
	MERMIN_TCP_ESTABLISHED = 4,
	MERMIN_TCP_FIN_WAIT_1 = 5,
	MERMIN_TCP_FIN_WAIT_2 = 6,
	MERMIN_TCP_CLOSE_WAIT = 7,
	MERMIN_TCP_CLOSING = 8,
	MERMIN_TCP_LAST_ACK = 9,
	MERMIN_TCP_TIME_WAIT = 10,
};

/*
 * Per-CPU kernel counters: index into the COUNTERS percpu array.
 * Every packet is SEEN; then exactly one of COUNTED, DUPLICATE, or an
 * UNPARSED_* / MAP_FULL / FRAG_UNMATCHED reason accounts for it.
 */
enum mermin_counter {
	MERMIN_CNT_SEEN = 0,
	MERMIN_CNT_COUNTED,
	MERMIN_CNT_DUPLICATE,            /* same packet already counted at another hook */
	MERMIN_CNT_UNPARSED_TRUNCATED,   /* a header ran past the end of the packet */
	MERMIN_CNT_UNPARSED_ETHERTYPE,   /* not IPv4/IPv6 (ARP, LLDP, ...) */
	MERMIN_CNT_UNPARSED_PROTOCOL,    /* malformed IP header (bad version, IHL, ...) */
	MERMIN_CNT_UNPARSED_TOO_DEEP,    /* more VLAN tags / extension headers / tunnels than we walk */
	MERMIN_CNT_MAP_FULL,             /* FLOWS had no room: flow not recorded */
	MERMIN_CNT_FRAG_UNMATCHED,       /* non-first fragment whose first fragment we never saw */
	MERMIN_CNT_FRAG_MAP_FULL,        /* first fragment could not be remembered */
	MERMIN_CNT_MAX,
};

/*
 * Flow key, normalized so both directions land in one entry: the endpoint
 * with the lower (address, port) - compared as Community ID orders them,
 * address bytes first, then port - is side "a"; the other is side "b".
 *
 * IPv4 addresses use the first 4 bytes, the rest is zero.
 * ICMP/ICMPv6 query messages (echo, timestamp, ...) put the identifier in
 * both ports, so a request and its reply share the key; other ICMP messages
 * (errors) have ports 0. Type and code live in the value.
 * ESP/AH/WireGuard flows have ports 0 (WireGuard: the UDP ports); the SPI or
 * receiver index is in the value.
 */
struct flow_key {
	__u8 addr_a[16];
	__u8 addr_b[16];
	__u16 port_a;
	__u16 port_b;
	__u8 ip_version;	/* 4 or 6 */
	__u8 protocol;		/* IANA protocol number of the (inner) transport */
	__u8 _pad[2];
};

/*
 * What one side of a flow sent. dir[0] in flow_value is a->b, dir[1] b->a.
 * DSCP/ECN/TTL/flow label: the latest packet in this direction.
 */
struct flow_dir {
	__u64 packets;
	__u64 bytes;		/* IP-layer bytes of the inner packet: IP header + payload */
	__u64 tunnel_bytes;	/* bytes of the outer packet(s) when tunnelled, else 0 */
	__u32 retransmits;	/* TCP segments whose payload repeated sequence space */
	__u32 seq_next;		/* TCP: highest seq + payload length seen (for retransmits) */
	__u32 flow_label;	/* IPv6 flow label */
	__u32 spi;		/* ESP/AH SPI, WireGuard receiver index */
	__u32 owner_ifindex;	/* hook that counts this direction (dedup) */
	__u8 owner_hook;	/* enum mermin_hook of that hook */
	__u8 tcp_flags;		/* OR of all TCP flags */
	__u8 dscp;
	__u8 ecn;
	__u8 ttl;		/* TTL / hop limit */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 seq_valid;		/* seq_next holds a value */
};

struct flow_value {
	__u64 first_seen_ns;	/* clock: CLOCK_BOOTTIME live, capture time in replay */
	__u64 last_seen_ns;
	__u64 tcp_syn_ns;	/* first SYN (no ACK) */
	__u64 tcp_synack_ns;	/* first SYN-ACK */
	struct flow_dir dir[2];
	__u8 tunnel_src[16];	/* outer addresses of the first packet */
	__u8 tunnel_dst[16];
	__u32 ifindex;		/* interface where the flow was first seen */
	__u32 tunnel_id;	/* VNI / GRE key */
	__u16 vlan_id;		/* outermost 802.1Q/802.1ad VLAN id, 0 = untagged */
	__u16 tunnel_sport;
	__u16 tunnel_dport;
	__u8 first_side;	/* 0: side a sent the first packet, 1: side b */
	__u8 first_hook;	/* enum mermin_hook of the first packet */
	__u8 tcp_state;		/* enum mermin_tcp_state */
	__u8 tunnel_type;	/* enum mermin_tunnel */
	__u8 tunnel_ip_version;
	__u8 tunnel_protocol;	/* outer transport (17 for VXLAN/Geneve, 47 GRE, 4/41 ...) */
	__u8 _pad[6];
};

/*
 * Load-time settings (.rodata). The Python loader writes them after
 * bpf_object__open() and before bpf_object__load().
 */
struct mermin_config {
	__u16 vxlan_port;	/* 4789 */
	__u16 geneve_port;	/* 6081 */
	__u16 wireguard_port;	/* 51820 */
	__u8 replay;		/* 1: clock = skb->tstamp (BPF_PROG_TEST_RUN replay) */
	__u8 _pad;
};

#endif /* __MERMIN_FLOW_H */
