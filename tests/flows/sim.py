"""A dict-backed flow map that accounts packets the way the kernel program does (normalized a/b
sides, per-direction counters, first side, SYN/SYN-ACK times), for flow-table tests without a
kernel. Values are the real `VALUE_DTYPE` records."""

from __future__ import annotations

import socket
from collections.abc import Callable

import numpy as np

from mermin.datapath.abi import KEY_DTYPE, VALUE_DTYPE

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _addr16(addr: str) -> tuple[bytes, int]:
    if ":" in addr:
        return socket.inet_pton(socket.AF_INET6, addr), 6
    return socket.inet_pton(socket.AF_INET, addr) + bytes(12), 4


class SimFlowMap:
    """`read_all` / `take` like `FlowMap`, plus `packet()` to count a packet into it."""

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self.entries: dict[bytes, np.ndarray] = {}  # key bytes -> VALUE_DTYPE scalar array
        self.before_take: Callable[[], None] | None = None
        self.map_full = 0

    def packet(
        self, t_ns: int, src: str, dst: str, sport: int = 0, dport: int = 0, proto: int = 6,
        size: int = 60, flags: int = 0, icmp: tuple[int, int] | None = None, dscp: int = 0,
        ttl: int = 64, ifindex: int = 3, tcp_state: int | None = None,
    ) -> None:
        sa, ver = _addr16(src)
        da, _ = _addr16(dst)
        if icmp is not None:  # query messages: identifier in both ports (caller passes sport)
            dport = sport
        forward = (sa, sport) <= (da, dport)
        key = np.zeros(1, KEY_DTYPE)
        a, b = ((sa, sport), (da, dport)) if forward else ((da, dport), (sa, sport))
        key["addr_a"][0] = np.frombuffer(a[0], np.uint8)
        key["addr_b"][0] = np.frombuffer(b[0], np.uint8)
        key["port_a"], key["port_b"] = a[1], b[1]
        key["ip_version"], key["protocol"] = ver, proto
        kb = key.tobytes()
        side = 0 if forward else 1
        val = self.entries.get(kb)
        if val is None:
            if len(self.entries) >= self.capacity:
                self.map_full += 1
                return
            val = np.zeros(1, VALUE_DTYPE)
            val["first_seen_ns"] = t_ns
            val["first_side"] = side
            val["ifindex"] = ifindex
            self.entries[kb] = val
        val["last_seen_ns"] = t_ns
        d = val["dir"][0, side]
        d["packets"] += 1
        d["bytes"] += size
        d["tcp_flags"] |= flags
        d["dscp"], d["ttl"] = dscp, ttl
        if icmp is not None:
            d["icmp_type"], d["icmp_code"] = icmp
        val["dir"][0, side] = d
        if tcp_state is not None:  # the kernel's observer state machine is not simulated
            val["tcp_state"] = tcp_state
        if proto == 6 and flags & SYN and not flags & ACK and val["tcp_syn_ns"][0] == 0:
            val["tcp_syn_ns"] = t_ns
        if proto == 6 and flags & SYN and flags & ACK and val["tcp_synack_ns"][0] == 0:
            val["tcp_synack_ns"] = t_ns

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        keys = np.frombuffer(b"".join(self.entries), KEY_DTYPE).copy()
        vals = (np.concatenate(list(self.entries.values())) if self.entries
                else np.zeros(0, VALUE_DTYPE))
        return keys, vals

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.before_take is not None:
            self.before_take()
        out = np.zeros(len(keys), VALUE_DTYPE)
        found = np.zeros(len(keys), bool)
        for i, kb in enumerate(np.ascontiguousarray(keys).view(f"V{KEY_DTYPE.itemsize}").ravel()
                               .tolist()):
            val = self.entries.pop(kb, None)
            if val is not None:
                out[i] = val[0]
                found[i] = True
        return out, found

    def counters(self) -> dict[str, int]:
        return {"map_full": self.map_full}
