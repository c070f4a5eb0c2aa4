"""Packet builders and a BPF_PROG_TEST_RUN harness for the datapath golden tests.

Builders take small frozen dataclasses and return wire bytes (scapy does the encoding):

    frame = tcp(Conv("10.0.0.1", "10.0.0.2", 40000, 80), TcpOpts(flags="S"))
    frame = tcp(Conv(...), l2=L2(vlans=(100, 200), outer_tpid=0x88A8))      # QinQ
    frame = vxlan(inner=ether(ip_pkt(...)/TCP(...)), outer=Conv(...), vni=42)

`Harness(datapath)` runs frames through `mermin_ingress`/`mermin_egress`, reads FLOWS back as
decoded numpy records keyed like the kernel (normalized), and diffs the kernel counters.
`expected_key()` is an independent Python implementation of the key normalization
(Community ID order) the tests check the kernel against.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from mermin.datapath import libbpf

__all__ = [
    "L2",
    "TC_ACT_UNSPEC",
    "Conv",
    "Harness",
    "IpOpts",
    "TcpOpts",
    "addr16",
    "ether",
    "expected_key",
    "fragments",
    "geneve",
    "gre",
    "icmp_echo",
    "ip_in_ip",
    "ip_len",
    "ip_pkt",
    "key_tuple",
    "tcp",
    "tcp_ip",
    "udp",
    "vxlan",
    "wireguard",
]

TC_ACT_UNSPEC = 0xFFFFFFFF  # -1 as the u32 retval BPF_PROG_TEST_RUN reports
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


@dataclass(frozen=True, slots=True)
class Conv:
    """One direction of a conversation: who sends to whom, and the ports."""

    src: str = "10.0.0.1"
    dst: str = "10.0.0.2"
    sport: int = 40000
    dport: int = 80

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.src).version

    def reply(self) -> Conv:
        """The other direction."""
        return Conv(self.dst, self.src, self.dport, self.sport)


@dataclass(frozen=True, slots=True)
class L2:
    """Ethernet framing: VLAN ids outermost first; the outer tag's TPID (0x88A8 for QinQ)."""

    vlans: tuple[int, ...] = ()
    outer_tpid: int = 0x8100


@dataclass(frozen=True, slots=True)
class IpOpts:
    """IP header settings: TOS/traffic class, TTL/hop limit, IPv6 flow label, IPv4 options,
    IPv6 extension headers (scapy layers, in order), IPv4 id."""

    tos: int = 0
    ttl: int = 64
    flow_label: int = 0
    options: bytes = b""
    ext: tuple[Packet, ...] = ()
    ip_id: int = 1


@dataclass(frozen=True, slots=True)
class TcpOpts:
    flags: str = "S"
    seq: int = 1000
    ack: int = 0
    payload: bytes = b""


def ether(payload: Packet | bytes, l2: L2 = L2(), ethertype: int | None = None) -> bytes:
    """Ethernet (+ VLAN tags) around `payload`; the ethertype follows the payload (IPv4/IPv6
    for scapy IP layers, or bytes whose first nibble is 4 or 6) unless given."""
    data = payload if isinstance(payload, bytes) else bytes(payload)
    if ethertype is None:
        ethertype = {4: 0x0800, 6: 0x86DD}.get(data[0] >> 4 if data else 0, 0x0800)
    frame: Packet = Ether(src=MAC_A, dst=MAC_B)
    for i, vid in enumerate(l2.vlans):
        tag = Dot1AD(vlan=vid) if i == 0 and l2.outer_tpid == 0x88A8 else Dot1Q(vlan=vid)
        frame = frame / tag
    frame.lastlayer().type = ethertype  # type: ignore[attr-defined]
    return bytes(frame) + data


def ip_pkt(conv: Conv, ip: IpOpts = IpOpts(), proto: int | None = None) -> Packet:
    """The IP header (with options / extension headers) for `conv`."""
    if conv.version == 4:
        hdr = IP(src=conv.src, dst=conv.dst, tos=ip.tos, ttl=ip.ttl, id=ip.ip_id)
        if ip.options:
            hdr.options = [Raw(ip.options)]  # type: ignore[list-item]
        if proto is not None:
            hdr.proto = proto
        return hdr
    hdr = IPv6(src=conv.src, dst=conv.dst, tc=ip.tos, hlim=ip.ttl, fl=ip.flow_label)
    for ext in ip.ext:
        hdr = hdr / ext.copy()
    if proto is not None:
        hdr.lastlayer().nh = proto  # type: ignore[attr-defined]
    return hdr


def tcp_ip(conv: Conv, t: TcpOpts = TcpOpts(), ip: IpOpts = IpOpts()) -> Packet:
    """The IP packet of a TCP segment (no Ethernet)."""
    seg = TCP(sport=conv.sport, dport=conv.dport, flags=t.flags, seq=t.seq, ack=t.ack)
    return ip_pkt(conv, ip) / seg / Raw(t.payload) if t.payload else ip_pkt(conv, ip) / seg


def tcp(conv: Conv, t: TcpOpts = TcpOpts(), ip: IpOpts = IpOpts(), l2: L2 = L2()) -> bytes:
    return ether(tcp_ip(conv, t, ip), l2)


def udp(conv: Conv, payload: bytes = b"x" * 10, ip: IpOpts = IpOpts(), l2: L2 = L2()) -> bytes:
    return ether(ip_pkt(conv, ip) / UDP(sport=conv.sport, dport=conv.dport) / Raw(payload), l2)


def icmp_echo(conv: Conv, ident: int, *, reply: bool = False, seq: int = 1) -> bytes:
    """Echo request (or reply) from conv.src to conv.dst; ports of `conv` are ignored."""
    if conv.version == 4:
        msg: Packet = ICMP(type=0 if reply else 8, id=ident, seq=seq)
    else:
        msg = (ICMPv6EchoReply if reply else ICMPv6EchoRequest)(id=ident, seq=seq)
    return ether(ip_pkt(conv) / msg / Raw(b"ping" * 8))


def ip_len(frame: bytes, offset: int = 14) -> int:
    """IP-layer length (header + payload) of the IP packet at `offset` of a frame."""
    b0 = frame[offset] >> 4
    if b0 == 4:
        return int.from_bytes(frame[offset + 2 : offset + 4], "big")
    return 40 + int.from_bytes(frame[offset + 4 : offset + 6], "big")


def fragments(conv: Conv, l4: Packet, sizes: tuple[int, ...], *, frag_id: int = 77,
              ttl: int = 64) -> list[bytes]:  # fmt: skip
    """The datagram `IP/l4` split into fragments whose payloads have `sizes` bytes (multiples
    of 8 but the last), in order. IPv4 uses the header's id/MF/offset; IPv6 a fragment
    header (32-bit id). Checksums are those of the whole datagram."""
    whole = bytes(ip_pkt(conv, IpOpts(ttl=ttl)) / l4)
    hlen = 20 if conv.version == 4 else 40
    proto = whole[9] if conv.version == 4 else whole[6]
    data = whole[hlen:]
    assert sum(sizes) == len(data), f"sizes must add up to {len(data)}"
    out, off = [], 0
    for i, size in enumerate(sizes):
        chunk, more = data[off : off + size], i < len(sizes) - 1
        if conv.version == 4:
            hdr: Packet = IP(src=conv.src, dst=conv.dst, id=frag_id & 0xFFFF, proto=proto,
                             ttl=ttl, flags="MF" if more else 0, frag=off // 8)  # fmt: skip
        else:
            hdr = IPv6(src=conv.src, dst=conv.dst, hlim=ttl) / IPv6ExtHdrFragment(
                nh=proto, offset=off // 8, m=int(more), id=frag_id
            )
        out.append(ether(hdr / Raw(chunk)))
        off += size
    return out


# --------------------------------------------------------------------------------------------
# Tunnels: an outer header around a finished inner frame or IP packet
# --------------------------------------------------------------------------------------------
def _outer(outer: Conv, payload: Packet, proto: int | None = None) -> bytes:
    return ether(ip_pkt(outer, proto=proto) / payload)


def vxlan(inner_frame: bytes, outer: Conv, vni: int = 42) -> bytes:
    """VXLAN (UDP to outer.dport) carrying a whole inner Ethernet frame."""
    hdr = bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0"
    return _outer(outer, UDP(sport=outer.sport, dport=outer.dport) / Raw(hdr + inner_frame))


def geneve(inner: bytes, outer: Conv, vni: int = 7, proto: int = 0x6558,
           options: bytes = b"") -> bytes:  # fmt: skip
    """Geneve with `options` (a multiple of 4 bytes) and inner protocol `proto`."""
    assert len(options) % 4 == 0
    hdr = bytes([len(options) // 4, 0]) + proto.to_bytes(2, "big")
    hdr += vni.to_bytes(3, "big") + b"\0" + options
    return _outer(outer, UDP(sport=outer.sport, dport=outer.dport) / Raw(hdr + inner))


def gre(inner: bytes, outer: Conv, proto: int = 0x0800, *, key: int | None = None,
        csum: bool = False, seq: int | None = None, version: int = 0) -> bytes:  # fmt: skip
    """GRE (RFC 2784/2890) with optional checksum, key and sequence number."""
    flags = (0x8000 if csum else 0) | (0x2000 if key is not None else 0)
    flags |= (0x1000 if seq is not None else 0) | version
    hdr = flags.to_bytes(2, "big") + proto.to_bytes(2, "big")
    if csum:
        hdr += b"\0\0\0\0"
    if key is not None:
        hdr += key.to_bytes(4, "big")
    if seq is not None:
        hdr += seq.to_bytes(4, "big")
    return _outer(outer, Raw(hdr + inner), proto=47)


def ip_in_ip(inner_ip: bytes, outer: Conv) -> bytes:
    """IPIP / 6in4 / 4in6 / ip6ip6, chosen by the inner and outer versions."""
    proto = 4 if inner_ip[0] >> 4 == 4 else 41
    return _outer(outer, Raw(inner_ip), proto=proto)


def wireguard(conv: Conv, msg_type: int, receiver: int = 0, sender: int = 0) -> bytes:
    """A WireGuard message: 2 = handshake response, 3 = cookie reply, 4 = transport data."""
    le = lambda v: v.to_bytes(4, "little")  # noqa: E731
    if msg_type == 2:
        body = le(2) + le(sender) + le(receiver) + bytes(80)
    elif msg_type == 1:
        body = le(1) + le(sender) + bytes(140)
    else:
        body = le(msg_type) + le(receiver) + bytes(8 if msg_type == 4 else 56) + b"data"
    return udp(conv, body)


# --------------------------------------------------------------------------------------------
# Expected keys (independent of the kernel code)
# --------------------------------------------------------------------------------------------
def addr16(addr: str) -> bytes:
    ip = ipaddress.ip_address(addr)
    return ip.packed.ljust(16, b"\0")


def expected_key(conv: Conv, proto: int, ports: tuple[int, int] | None = None) -> tuple:
    """(key tuple as `Harness.flows()` returns it, side of conv.src: 0 = a, 1 = b).

    Community ID order: the endpoint with the lower (address bytes, port) is side a."""
    sport, dport = ports if ports is not None else (conv.sport, conv.dport)
    src, dst = (addr16(conv.src), sport), (addr16(conv.dst), dport)
    side = 0 if src <= dst else 1
    a, b = (src, dst) if side == 0 else (dst, src)
    return (a[0], b[0], a[1], b[1], conv.version, proto), side


# --------------------------------------------------------------------------------------------
# Running the program
# --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Harness:
    """Runs frames through a loaded `Datapath` and reads the results back."""

    dp: object  # mermin.datapath.loader.Datapath
    now: int = 1_000_000_000
    _base: dict[str, int] = field(default_factory=dict)

    def run(self, frame: bytes, hook: str = "ingress", *, ifindex: int = 0,
            tstamp: int | None = None, gso_segs: int = 0) -> int:  # fmt: skip
        """One packet through `mermin_<hook>`; returns the program's return value (u32)."""
        if tstamp is None:
            self.now += 1000
            tstamp = self.now
        ctx = libbpf.skb_ctx(ifindex=ifindex, tstamp=tstamp, gso_segs=gso_segs)
        retval, _ = libbpf.prog_test_run(self.dp.program_fd(f"mermin_{hook}"), frame, ctx)
        return retval

    def flows(self) -> dict[tuple, np.void]:
        """FLOWS as {(addr_a, addr_b, port_a, port_b, ip_version, protocol): value record}."""
        keys, values = self.dp.flows.read_all()
        return {key_tuple(k): v for k, v in zip(keys, values, strict=True)}

    def reset(self) -> None:
        """Empty FLOWS and remember the counters, so `delta()` starts from zero."""
        keys, _ = self.dp.flows.read_all()
        if len(keys):
            self.dp.flows.delete(keys)
        self._base = self.dp.counters()

    def delta(self) -> dict[str, int]:
        """Counters since the last `reset()`, only the non-zero ones."""
        now = self.dp.counters()
        out = {k: v - self._base.get(k, 0) for k, v in now.items()}
        return {k: v for k, v in out.items() if v}


def key_tuple(k: np.void) -> tuple:
    """A FLOWS key record as a hashable tuple (the shape `expected_key()` returns)."""
    return (bytes(k["addr_a"]), bytes(k["addr_b"]), int(k["port_a"]), int(k["port_b"]),
            int(k["ip_version"]), int(k["protocol"]))  # fmt: skip


def only_flow(h: Harness, key: tuple):
    """The value of the one flow in the map, asserting it is the only one and has `key`."""
    flows = h.flows()
    assert list(flows) == [key], f"expected exactly one flow {key}, got {list(flows)}"
    return flows[key]
