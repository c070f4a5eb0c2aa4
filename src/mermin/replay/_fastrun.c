// SPDX-License-Identifier: Apache-2.0
/*
 * _fastrun.c - the two per-packet loops of `mermin replay`, in C.
 *
 * mr_index(): walks pcap / pcapng records of a capture held in memory (mmap) and writes one
 *             struct mr_pkt per packet (offset, length, timestamp in ns, link type).
 * mr_run():   feeds packets to a loaded sched_cls program with BPF_PROG_TEST_RUN, the capture
 *             timestamp in __sk_buff.tstamp, rewriting Linux cooked (SLL, SLL2) and raw IP
 *             frames to Ethernet first.
 *
 * Python (mermin.replay.capture) validates the file header and owns all policy; a packet this
 * file cannot use is flagged and counted, never fatal. Built by `make replay` into
 * build/libmermin_replay.so and loaded with ctypes; mermin.replay falls back to dpkt + ctypes
 * when it is missing.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* One packet: mirrored by PKT_DTYPE in mermin/replay/capture.py. */
struct mr_pkt {
	uint64_t offset;	/* of the packet bytes in the capture buffer */
	uint64_t ts_ns;		/* capture timestamp, Unix ns */
	uint32_t caplen;	/* bytes present in the file */
	uint32_t origlen;	/* bytes on the wire */
	uint32_t linktype;
	uint32_t flags;		/* MR_F_* */
};

#define MR_F_TRUNCATED 1	/* record runs past the end of the file */
#define MR_F_BAD_IFACE 2	/* pcapng: interface id without an IDB */

/* Reader state kept across calls: format and, for pcapng, the section's interfaces. */
#define MR_MAX_IFACES 256
struct mr_reader {
	uint32_t format;	/* 1 pcap, 2 pcapng */
	uint32_t swapped;	/* file byte order differs from ours */
	uint32_t linktype;	/* pcap: from the file header */
	uint32_t nsec;		/* pcap: timestamps in ns (magic a1b23c4d) */
	uint32_t n_ifaces;	/* pcapng: interfaces of the current section */
	uint32_t if_linktype[MR_MAX_IFACES];
	uint64_t if_mul[MR_MAX_IFACES];		/* ts units -> ns multiplier (0: use div) */
	uint64_t if_div[MR_MAX_IFACES];
	uint64_t last_ts;	/* pcapng SPB carries no timestamp: reuse the last one */
	uint64_t bad_blocks;	/* pcapng blocks with an impossible length */
};

static inline uint32_t rd32(const uint8_t *p, int swapped)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return swapped ? __builtin_bswap32(v) : v;
}

static inline uint16_t rd16(const uint8_t *p, int swapped)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return swapped ? __builtin_bswap16(v) : v;
}

static uint64_t pow10u(unsigned n)
{
	uint64_t v = 1;

	while (n--)
		v *= 10;
	return v;
}

/* Classic pcap: 16-byte record header then caplen bytes. */
/*
 * A record (pcap, 16-byte header) or block (pcapng, 12 bytes) header cut short by the end of
 * the file becomes one truncated entry; returns the new entry count and consumes the rest.
 */
static uint64_t mark_cut_header(struct mr_pkt *out, uint64_t n, uint64_t max, uint64_t *p,
				uint64_t len, uint64_t header)
{
	if (n < max && *p < len && len - *p < header) {
		struct mr_pkt *k = &out[n++];

		memset(k, 0, sizeof(*k));
		k->offset = *p;
		k->flags = MR_F_TRUNCATED;
		*p = len;
	}
	return n;
}

static long index_pcap(struct mr_reader *r, const uint8_t *buf, uint64_t len, uint64_t *pos,
		       struct mr_pkt *out, uint64_t max)
{
	uint64_t n = 0, p = *pos;

	while (n < max && p + 16 <= len) {
		uint32_t sec = rd32(buf + p, r->swapped), frac = rd32(buf + p + 4, r->swapped);
		uint32_t caplen = rd32(buf + p + 8, r->swapped), orig = rd32(buf + p + 12, r->swapped);
		struct mr_pkt *k = &out[n++];

		k->offset = p + 16;
		k->ts_ns = (uint64_t)sec * 1000000000ull + (r->nsec ? frac : (uint64_t)frac * 1000);
		k->origlen = orig;
		k->linktype = r->linktype;
		k->flags = 0;
		if (caplen > len - p - 16) {
			k->caplen = (uint32_t)(len - p - 16);
			k->flags = MR_F_TRUNCATED;
			p = len;
			break;
		}
		k->caplen = caplen;
		p += 16 + (uint64_t)caplen;
	}
	n = mark_cut_header(out, n, max, &p, len, 16);
	*pos = p;
	return (long)n;
}

/* pcapng interface description block: link type and if_tsresol. */
static void pcapng_idb(struct mr_reader *r, const uint8_t *b, uint32_t blen)
{
	uint32_t i = r->n_ifaces, o = 16;
	uint8_t res = 6;

	if (i >= MR_MAX_IFACES) {
		r->n_ifaces++;
		return;
	}
	r->if_linktype[i] = rd16(b + 8, r->swapped);
	while (o + 4 <= blen - 4) {
		uint16_t code = rd16(b + o, r->swapped), olen = rd16(b + o + 2, r->swapped);

		if (code == 0)
			break;
		if (code == 9 && olen >= 1 && o + 4 < blen - 4)
			res = b[o + 4];
		o += 4 + ((olen + 3u) & ~3u);
	}
	r->if_mul[i] = 0;
	r->if_div[i] = 0;
	if (res & 0x80) {
		/* 2^-n seconds: ns = ts * 1e9 >> n, done in 128 bits in mr_ts() */
		r->if_div[i] = (uint64_t)1 << (res & 0x7f);
	} else if (res <= 9) {
		r->if_mul[i] = pow10u(9 - res);
	} else {
		r->if_div[i] = pow10u(res - 9);
		r->if_mul[i] = 0;
	}
	r->n_ifaces++;
}

static uint64_t mr_ts(const struct mr_reader *r, uint32_t iface, uint64_t ts)
{
	if (r->if_mul[iface])
		return ts * r->if_mul[iface];
	if (r->if_div[iface] && (r->if_div[iface] & (r->if_div[iface] - 1)) == 0)
		return (uint64_t)(((unsigned __int128)ts * 1000000000u) / r->if_div[iface]);
	return r->if_div[iface] ? ts / r->if_div[iface] : ts;
}

static long index_pcapng(struct mr_reader *r, const uint8_t *buf, uint64_t len, uint64_t *pos,
			 struct mr_pkt *out, uint64_t max)
{
	uint64_t n = 0, p = *pos;

	while (n < max && p + 12 <= len) {
		const uint8_t *b = buf + p;
		uint32_t type, blen;

		if (rd32(b, 0) == 0x0A0D0D0A) {
			/* section header: byte order comes from its magic */
			uint32_t magic;

			memcpy(&magic, b + 8, 4);
			r->swapped = magic != 0x1A2B3C4D;
			r->n_ifaces = 0;
		}
		type = rd32(b, r->swapped);
		blen = rd32(b + 4, r->swapped);
		if (blen < 12 || (blen & 3) || blen > len - p) {
			r->bad_blocks++;
			if (blen >= 12 && !(blen & 3) && (type == 6 || type == 3 || type == 2)) {
				struct mr_pkt *k = &out[n++];

				memset(k, 0, sizeof(*k));
				k->offset = p;
				k->flags = MR_F_TRUNCATED;
			}
			p = len;	/* cannot resynchronise: stop here */
			break;
		}
		if (type == 1 && blen >= 20) {
			pcapng_idb(r, b, blen);
		} else if ((type == 6 && blen >= 32) || (type == 2 && blen >= 32)) {
			/* enhanced (6) or obsolete (2) packet block */
			uint32_t iface = type == 6 ? rd32(b + 8, r->swapped) : rd16(b + 8, r->swapped);
			uint64_t ts = ((uint64_t)rd32(b + 12, r->swapped) << 32) | rd32(b + 16, r->swapped);
			uint32_t caplen = rd32(b + 20, r->swapped);
			struct mr_pkt *k = &out[n++];

			k->offset = p + 28;
			k->origlen = rd32(b + 24, r->swapped);
			k->flags = 0;
			k->caplen = caplen;
			if (caplen > blen - 32) {
				k->caplen = blen - 32;
				k->flags |= MR_F_TRUNCATED;
			}
			if (iface >= r->n_ifaces || iface >= MR_MAX_IFACES) {
				k->flags |= MR_F_BAD_IFACE;
				k->linktype = 0xffffffff;
				k->ts_ns = r->last_ts;
			} else {
				k->linktype = r->if_linktype[iface];
				k->ts_ns = mr_ts(r, iface, ts);
				r->last_ts = k->ts_ns;
			}
		} else if (type == 3 && blen >= 16) {
			/* simple packet block: interface 0, no timestamp */
			struct mr_pkt *k = &out[n++];
			uint32_t orig = rd32(b + 8, r->swapped);

			k->offset = p + 12;
			k->origlen = orig;
			k->caplen = orig < blen - 16 ? orig : blen - 16;
			k->ts_ns = r->last_ts;
			k->flags = r->n_ifaces ? 0 : MR_F_BAD_IFACE;
			k->linktype = r->n_ifaces ? r->if_linktype[0] : 0xffffffff;
		}
		p += blen;
	}
	n = mark_cut_header(out, n, max, &p, len, 12);
	*pos = p;
	return (long)n;
}

long mr_index(struct mr_reader *r, const uint8_t *buf, uint64_t len, uint64_t *pos,
	      struct mr_pkt *out, uint64_t max)
{
	if (r->format == 1)
		return index_pcap(r, buf, len, pos, out, max);
	if (r->format == 2)
		return index_pcapng(r, buf, len, pos, out, max);
	return -EINVAL;
}

/* Outcome counters of mr_run, mirrored in mermin/replay/fastrun.py. */
enum {
	MR_RUN_OK,		/* went through the program */
	MR_RUN_DAMAGED,		/* truncated record, bad interface */
	MR_RUN_LINKTYPE,	/* link type we cannot rewrite to Ethernet */
	MR_RUN_SHORT,		/* too short for its link-layer header */
	MR_RUN_REJECTED,	/* the kernel refused the test run (EINVAL) */
	MR_RUN_MAX,
};

#define ETH_HLEN 14
/*
 * BPF_PROG_TEST_RUN takes at most a page minus skb head- and tailroom (about 3.7 KiB) of
 * packet data. Longer frames (jumbo, GRO/TSO-sized captures) are cut to MR_MAX_FRAME: the
 * headers the program reads are all in front, and byte counts come from the IP header.
 */
#define MR_MAX_FRAME 3584
#define SCRATCH MR_MAX_FRAME

/*
 * Ethernet frame for `k`: either the bytes in place or a rewrite into `scratch`.
 * Returns the frame length, 0 if the packet cannot be used (counts[] says why).
 */
static uint32_t to_ethernet(const uint8_t *buf, const struct mr_pkt *k, uint8_t *scratch,
			    const uint8_t **frame, uint32_t *wire, uint64_t *counts)
{
	const uint8_t *pkt = buf + k->offset;
	uint32_t caplen = k->caplen, hdr = 0;
	uint16_t proto = 0;

	switch (k->linktype) {
	case 1:			/* Ethernet */
		if (caplen < ETH_HLEN) {
			counts[MR_RUN_SHORT]++;
			return 0;
		}
		*frame = pkt;
		*wire = k->origlen > caplen ? k->origlen : caplen;
		return caplen < MR_MAX_FRAME ? caplen : MR_MAX_FRAME;
	case 113:		/* Linux cooked v1: protocol at 14 */
		hdr = 16;
		if (caplen < hdr) {
			counts[MR_RUN_SHORT]++;
			return 0;
		}
		proto = (uint16_t)(pkt[14] << 8 | pkt[15]);
		break;
	case 276:		/* Linux cooked v2: protocol at 0 */
		hdr = 20;
		if (caplen < hdr) {
			counts[MR_RUN_SHORT]++;
			return 0;
		}
		proto = (uint16_t)(pkt[0] << 8 | pkt[1]);
		break;
	case 12: case 14: case 101: case 228: case 229:	/* raw IP */
		if (caplen < 1) {
			counts[MR_RUN_SHORT]++;
			return 0;
		}
		if (k->linktype == 228 || (k->linktype != 229 && (pkt[0] >> 4) == 4))
			proto = 0x0800;
		else if (k->linktype == 229 || (pkt[0] >> 4) == 6)
			proto = 0x86DD;
		else
			proto = 0;	/* not IP: the program counts it as an unparsed ethertype */
		break;
	default:
		counts[MR_RUN_LINKTYPE]++;
		return 0;
	}
	/* locally administered MACs, then the ethertype the link layer named */
	memcpy(scratch, "\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01", 12);
	scratch[12] = proto >> 8;
	scratch[13] = proto & 0xff;
	{
		uint32_t body = caplen - hdr, len, orig;

		if (body > SCRATCH - ETH_HLEN)
			body = SCRATCH - ETH_HLEN;
		memcpy(scratch + ETH_HLEN, pkt + hdr, body);
		len = ETH_HLEN + body;
		orig = k->origlen >= hdr ? ETH_HLEN + k->origlen - hdr : len;
		*frame = scratch;
		*wire = orig > len ? orig : len;
		return len;
	}
}

/*
 * Run packets [0, n) through program `prog_fd`. counts[MR_RUN_MAX] accumulate outcomes.
 * Returns 0, or -errno of a failure that is not the packet's fault (then *failed_at is set).
 */
long mr_run(int prog_fd, const uint8_t *buf, const struct mr_pkt *pkts, uint64_t n,
	    uint32_t ifindex, uint64_t *counts, uint64_t *failed_at)
{
	static uint8_t scratch[SCRATCH];
	struct __sk_buff ctx;
	union bpf_attr attr;
	uint64_t i;

	for (i = 0; i < n; i++) {
		const struct mr_pkt *k = &pkts[i];
		const uint8_t *frame = NULL;
		uint32_t wire = 0, len;
		long ret;

		if (k->flags) {
			counts[MR_RUN_DAMAGED]++;
			continue;
		}
		len = to_ethernet(buf, k, scratch, &frame, &wire, counts);
		if (!len)
			continue;
		memset(&ctx, 0, sizeof(ctx));
		ctx.tstamp = k->ts_ns;
		ctx.ifindex = ifindex;
		ctx.wire_len = wire < 65535 ? wire : 65535;	/* kernel limit: GSO_LEGACY_MAX_SIZE */
		memset(&attr, 0, sizeof(attr));
		attr.test.prog_fd = prog_fd;
		attr.test.data_in = (uint64_t)(uintptr_t)frame;
		attr.test.data_size_in = len;
		attr.test.ctx_in = (uint64_t)(uintptr_t)&ctx;
		attr.test.ctx_size_in = sizeof(ctx);
		attr.test.repeat = 1;
		ret = syscall(__NR_bpf, BPF_PROG_TEST_RUN, &attr, sizeof(attr));
		if (ret == 0) {
			counts[MR_RUN_OK]++;
		} else if (errno == EINVAL) {
			counts[MR_RUN_REJECTED]++;
		} else {
			*failed_at = i;
			return -errno;
		}
	}
	return 0;
}
