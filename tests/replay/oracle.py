"""tshark as the oracle: per-conversation packets (from `-z conv,tcp -z conv,udp`) and IP-layer
bytes (from the ip.len / ipv6.plen fields) in each direction, keyed like our reports."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

# (protocol, (addr, port), (addr, port)) with the endpoints in a canonical order
ConvKey = tuple[int, tuple[str, int], tuple[str, int]]


def canonical(proto: int, a: tuple[str, int], b: tuple[str, int]) -> tuple[ConvKey, bool]:
    """Key with the smaller endpoint first, and whether a->b is the key's forward direction."""
    return ((proto, a, b), True) if a <= b else ((proto, b, a), False)


def _endpoint(text: str) -> tuple[str, int]:
    addr, port = text.rsplit(":", 1)
    return addr, int(port)


def tshark_conversations(path: Path) -> dict[ConvKey, list[int]]:
    """{key: [packets fwd, packets rev]} summed over tshark's conversations of that 5-tuple."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    convs: dict[ConvKey, list[int]] = defaultdict(lambda: [0, 0])
    proto = 0
    for line in out.splitlines():
        if line.startswith("TCP Conversations"):
            proto = 6
        elif line.startswith("UDP Conversations"):
            proto = 17
        parts = line.split()
        if len(parts) < 9 or parts[1] != "<->":
            continue
        left, right = _endpoint(parts[0]), _endpoint(parts[2])
        # columns: "<-" frames, bytes, unit, "->" frames, bytes, unit, ...
        to_left, to_right = int(parts[3].replace(",", "")), int(parts[6].replace(",", ""))
        key, forward = canonical(proto, left, right)
        c = convs[key]
        c[0 if forward else 1] += to_right
        c[1 if forward else 0] += to_left
    return dict(convs)


def tshark_ip_bytes(path: Path) -> dict[ConvKey, list[int]]:
    """{key: [IP bytes fwd, IP bytes rev]} from per-packet ip.len / ipv6.plen."""
    fields = ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport",
              "udp.srcport", "udp.dstport", "ip.len", "ipv6.plen"]  # fmt: skip
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t",
           "-Y", "(tcp || udp) && !icmp && !icmpv6"]  # fmt: skip
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    totals: dict[ConvKey, list[int]] = defaultdict(lambda: [0, 0])
    for line in out.splitlines():
        v = line.split("\t")
        if len(v) < 10:
            continue
        src, dst = (v[0], v[1]) if v[0] else (v[2], v[3])
        if v[4]:
            proto, sport, dport = 6, v[4], v[5]
        else:
            proto, sport, dport = 17, v[6], v[7]
        if "," in src + dst + sport + dport + v[8] + v[9]:
            continue  # more than one IP/L4 layer (tunnel): not used by the oracle files
        size = int(v[8]) if v[0] else 40 + int(v[9])
        key, forward = canonical(proto, (src, int(sport)), (dst, int(dport)))
        totals[key][0 if forward else 1] += size
    return dict(totals)


def our_conversations(reports) -> dict[ConvKey, list[int]]:
    """{key: [packets fwd, packets rev, bytes fwd, bytes rev]} summed over reports (deltas)."""
    convs: dict[ConvKey, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in reports:
        if r.protocol not in (6, 17):
            continue
        key, forward = canonical(r.protocol, (r.src_addr, r.src_port), (r.dst_addr, r.dst_port))
        c = convs[key]
        f, b = (0, 1) if forward else (1, 0)
        c[f] += r.packets_delta
        c[b] += r.rev_packets_delta
        c[2 + f] += r.bytes_delta
        c[2 + b] += r.rev_bytes_delta
    return dict(convs)
