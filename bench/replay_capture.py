"""Synthetic capture for the replay benchmark: TCP conversations (handshake, data both ways,
FIN close) and UDP request/response flows, interleaved in time, written as a classic pcap with
Ethernet framing. Deterministic for a given size."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

__all__ = ["generate_capture"]

_ETH = bytes.fromhex("020000000002" "020000000001" "0800")
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
_REC = struct.Struct("<IIII")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _tcp_script(n: int) -> list[tuple[int, int, int]]:
    """(from_client, flags, payload) for an n-packet TCP conversation (n >= 7)."""
    script = [(1, SYN, 0), (0, SYN | ACK, 0), (1, ACK, 0)]
    for k in range(n - 6):
        script.append((k % 2 == 0, PSH | ACK, 200 if k % 2 == 0 else 1200))
    script += [(1, FIN | ACK, 0), (0, FIN | ACK, 0), (1, ACK, 0)]
    return [(int(c), f, p) for c, f, p in script]


def generate_capture(path: str | Path, packets: int = 1_000_000, per_tcp: int = 50,
                     per_udp: int = 10, udp_share: float = 0.2) -> dict[str, int]:
    """Write `packets` frames to `path`; returns counts of conversations by protocol."""
    udp_packets = int(packets * udp_share)
    n_udp = max(1, udp_packets // per_udp)
    n_tcp = max(1, (packets - n_udp * per_udp) // per_tcp)
    rng = np.random.default_rng(7)
    tcp_script = _tcp_script(per_tcp)
    starts = rng.uniform(0, 600, n_tcp + n_udp)
    ts_list, conv_list, step_list = [], [], []
    for c in range(n_tcp + n_udp):
        length = per_tcp if c < n_tcp else per_udp
        steps = np.arange(length)
        ts_list.append(starts[c] + steps * 0.01)
        conv_list.append(np.full(length, c))
        step_list.append(steps)
    ts = np.concatenate(ts_list)
    conv = np.concatenate(conv_list)
    step = np.concatenate(step_list)
    order = np.argsort(ts, kind="stable")[:packets]
    base = 1_700_000_000
    out = bytearray(_PCAP_HEADER)
    for t, c, k in zip(ts[order].tolist(), conv[order].tolist(), step[order].tolist(),
                       strict=True):
        client = struct.pack("!BBBB", 10, 1 + (c >> 16), (c >> 8) & 255, c & 255)
        server = bytes((10, 200, 0, 1 + c % 50))
        cport = 20000 + c % 40000
        if c < n_tcp:
            from_client, flags, payload = tcp_script[k]
            sport, dport = (cport, 443) if from_client else (443, cport)
            l4 = _TCP.pack(sport, dport, 1000 + k, 2000 + k, 5 << 4, flags, 65535, 0, 0)
            proto = 6
        else:
            from_client, payload = k % 2 == 0, 60 if k % 2 == 0 else 180
            sport, dport = (cport, 53) if from_client else (53, cport)
            l4 = _UDP.pack(sport, dport, 8 + payload, 0)
            proto = 17
        src, dst = (client, server) if from_client else (server, client)
        total = 20 + len(l4) + payload
        ip = _IP.pack(0x45, 0, total, k & 0xFFFF, 0x4000, 64, proto, 0, src, dst)
        frame_len = 14 + total
        sec = base + int(t)
        out += _REC.pack(sec, int((t % 1) * 1e6), frame_len, frame_len)
        out += _ETH + ip + l4 + bytes(payload)
    Path(path).write_bytes(out)
    return {"tcp": n_tcp, "udp": n_udp, "packets": len(order)}
