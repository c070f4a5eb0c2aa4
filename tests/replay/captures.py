"""Crafted captures with known ground truth for replay tests (scapy packets, exact times)."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap, wrpcapng

T0 = 1_700_000_000.0
CLIENT, SERVER = "10.1.0.5", "10.2.0.9"
CLIENT6, SERVER6 = "2001:db8::5", "2001:db8:1::9"


def at(pkt: Packet, t: float) -> Packet:
    pkt.time = T0 + t
    return pkt


def eth(ip: Packet) -> Packet:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip


def tcp_conversation(t: float, sport: int = 40000, dport: int = 80, data: int = 3,
                     close: str = "fin", ip=IP, client=CLIENT, server=SERVER,
                     handshake: bool = True) -> list[Packet]:  # fmt: skip
    """A TCP conversation, one packet per 10 ms; returns IP packets with times set."""
    c2s = ip(src=client, dst=server)
    s2c = ip(src=server, dst=client)
    pkts: list[Packet] = []
    if handshake:
        pkts += [c2s / TCP(sport=sport, dport=dport, flags="S", seq=100),
                 s2c / TCP(sport=dport, dport=sport, flags="SA", seq=500, ack=101),
                 c2s / TCP(sport=sport, dport=dport, flags="A", seq=101, ack=501)]  # fmt: skip
    for k in range(data):
        pkts.append(c2s / TCP(sport=sport, dport=dport, flags="PA", seq=101 + 100 * k, ack=501)
                    / Raw(b"q" * 100))  # fmt: skip
        pkts.append(s2c / TCP(sport=dport, dport=sport, flags="PA", seq=501 + 1000 * k,
                              ack=201 + 100 * k) / Raw(b"r" * 1000))  # fmt: skip
    if close == "fin":
        pkts += [c2s / TCP(sport=sport, dport=dport, flags="FA", seq=101 + 100 * data, ack=1),
                 s2c / TCP(sport=dport, dport=sport, flags="FA", seq=1, ack=2),
                 c2s / TCP(sport=sport, dport=dport, flags="A", seq=2, ack=2)]  # fmt: skip
    elif close == "rst":
        pkts.append(s2c / TCP(sport=dport, dport=sport, flags="R", seq=9))
    return [at(p, t + 0.01 * i) for i, p in enumerate(pkts)]


def write(path: Path, packets: list[Packet], linktype: str = "ether", ng: bool = False) -> Path:
    """Write IP packets framed for `linktype`: ether | sll | sll2 | raw."""
    framed = []
    for p in packets:
        ethertype = 0x86DD if isinstance(p, IPv6) else 0x0800
        if linktype == "ether":
            f = eth(p) if not isinstance(p, Ether) else p
        elif linktype == "sll":
            f = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02" * 6 + b"\0\0",
                            proto=ethertype) / p  # fmt: skip
        elif linktype == "sll2":
            f = CookedLinuxV2(proto=ethertype, ifindex=2, lladdrtype=1, pkttype=0,
                              lladdrlen=6, src=b"\x02" * 6 + b"\0\0") / p  # fmt: skip
        else:
            f = p
        f.time = p.time
        framed.append(f)
    lt = {"ether": 1, "sll": 113, "sll2": 276, "raw": 101}[linktype]
    if ng:
        wrpcapng(str(path), framed)  # scapy derives the link type from the first frame
    else:
        wrpcap(str(path), framed, linktype=lt)
    return path


def vxlan(inner: Packet, vni: int = 42) -> Packet:
    outer = IP(src="192.168.0.1", dst="192.168.0.2") / UDP(sport=50000, dport=4789)
    p = eth(outer / VXLAN(vni=vni) / Ether(src="02:aa:00:00:00:01", dst="02:aa:00:00:00:02")
            / inner)  # fmt: skip
    p.time = inner.time
    return p


def gre(inner: Packet, key: int | None = 7) -> Packet:
    g = GRE(proto=0x0800, key_present=1, key=key) if key is not None else GRE(proto=0x0800)
    p = eth(IP(src="192.168.0.1", dst="192.168.0.2") / g / inner)
    p.time = inner.time
    return p


__all__ = ["CLIENT", "CLIENT6", "ICMP", "SERVER", "SERVER6", "T0", "UDP", "at", "gre",
           "tcp_conversation", "vxlan", "write"]  # fmt: skip
