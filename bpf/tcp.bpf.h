/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * tcp.bpf.h - TCP facts kept per flow (kernel side only): flags, the observer's state
 * machine, handshake times and retransmitted segments.
 *
 * The state is the one of the client endpoint as a passive observer infers it from
 * flags alone: the client is the side that sent the flow's first packet (the SYN when
 * the handshake was seen). Sequence and acknowledgement numbers are not matched, so a
 * FIN+ACK answering a FIN is taken as acknowledging it.
 *
 * Writes to the shared value are plain stores except the counters: two CPUs updating
 * one direction of one TCP flow at the same time is rare (RSS keeps a flow on one
 * queue), and the worst outcome is one lost flag or state step, never a bad count.
 */
#ifndef __MERMIN_TCP_BPF_H
#define __MERMIN_TCP_BPF_H

#include "parse.bpf.h"
#include "clock.bpf.h"

/* closing steps; @client: the packet comes from the client endpoint */
static __always_inline __u8 tcp_fin_state(__u8 s, __u8 flags, int client)
{
	if (client)
		return s == MERMIN_TCP_CLOSE_WAIT ? MERMIN_TCP_LAST_ACK :
		       s <= MERMIN_TCP_ESTABLISHED ? MERMIN_TCP_FIN_WAIT_1 : s;
	switch (s) {
	case MERMIN_TCP_FIN_WAIT_1:
		return (flags & TCP_ACK) ? MERMIN_TCP_TIME_WAIT : MERMIN_TCP_CLOSING;
	case MERMIN_TCP_FIN_WAIT_2:
		return MERMIN_TCP_TIME_WAIT;
	default:
		return s <= MERMIN_TCP_ESTABLISHED ? MERMIN_TCP_CLOSE_WAIT : s;
	}
}

/* a segment with ACK and no SYN/FIN/RST */
static __always_inline __u8 tcp_ack_state(__u8 s, int client, int reset_seen)
{
	switch (s) {
	case MERMIN_TCP_CLOSED:		/* joined mid-stream, unless it was reset */
		return reset_seen ? s : MERMIN_TCP_ESTABLISHED;
	case MERMIN_TCP_SYN_SENT:	/* the SYN-ACK went another way */
	case MERMIN_TCP_SYN_RECEIVED:
		return client ? MERMIN_TCP_ESTABLISHED : s;
	case MERMIN_TCP_FIN_WAIT_1:
		return client ? s : MERMIN_TCP_FIN_WAIT_2;
	case MERMIN_TCP_CLOSING:
		return client ? s : MERMIN_TCP_TIME_WAIT;
	case MERMIN_TCP_LAST_ACK:
		return client ? s : MERMIN_TCP_CLOSED;
	default:
		return s;
	}
}

static __always_inline __u8 tcp_next_state(__u8 s, __u8 flags, int client, int reset_seen)
{
	if (flags & TCP_RST)
		return MERMIN_TCP_CLOSED;
	if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		return (s <= MERMIN_TCP_SYN_SENT || s == MERMIN_TCP_TIME_WAIT) ?
		       MERMIN_TCP_SYN_SENT : s;
	if (flags & TCP_SYN)	/* SYN-ACK */
		return s <= MERMIN_TCP_SYN_SENT ? MERMIN_TCP_SYN_RECEIVED : s;
	if (flags & TCP_FIN)
		return (reset_seen && s == MERMIN_TCP_CLOSED) ? s : tcp_fin_state(s, flags, client);
	if (flags & TCP_ACK)
		return tcp_ack_state(s, client, reset_seen);
	return s;
}

/*
 * Retransmits, per direction: a segment with payload whose end (seq + length) is not
 * after the highest end seen so far repeats sequence space. Serial-number arithmetic
 * (RFC 1982): the signed 32-bit difference survives sequence wrap-around. Reordered
 * segments and keep-alive probes count too, as they do for most passive observers.
 */
static __always_inline void tcp_track_seq(struct flow_dir *d, const struct packet *p)
{
	__u32 end;

	if (!p->payload_len)
		return;
	end = p->tcp_seq + p->payload_len;
	if (d->seq_valid && (__s32)(end - d->seq_next) <= 0) {
		__sync_fetch_and_add(&d->retransmits, 1);
		return;
	}
	d->seq_next = end;
	d->seq_valid = 1;
}

/* everything TCP-specific one counted segment changes in the flow */
static __always_inline void tcp_update(struct clock_cache *cc, struct flow_value *v,
				       struct flow_dir *d, const struct packet *p)
{
	__u8 flags = p->tcp_flags;
	int reset_seen;

	if ((d->tcp_flags | flags) != d->tcp_flags)
		d->tcp_flags |= flags;
	if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN && !v->tcp_syn_ns)
		v->tcp_syn_ns = clock_exact(cc);
	if ((flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) && !v->tcp_synack_ns)
		v->tcp_synack_ns = clock_exact(cc);
	tcp_track_seq(d, p);
	reset_seen = (v->dir[0].tcp_flags | v->dir[1].tcp_flags) & TCP_RST;
	v->tcp_state = tcp_next_state(v->tcp_state, flags, p->side == v->first_side, reset_seen);
}

#endif /* __MERMIN_TCP_BPF_H */
