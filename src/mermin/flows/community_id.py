"""Community ID v1 (https://github.com/corelight/community-id-spec), as the reference `communityid`
package computes it: SHA-1 over seed, ordered endpoints, protocol and ports, base64-encoded.

ICMP/ICMPv6 messages use (type, counterpart type) as ports so a request and its reply hash the
same; messages without a counterpart (errors) are one-way: (type, code), never reordered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

import numpy as np

__all__ = ["CommunityIdHasher", "community_id", "community_ids"]

_ICMP4_PAIRS: dict[int, int] = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10,
                                17: 18, 18: 17}  # fmt: skip
_ICMP6_PAIRS: dict[int, int] = {
    128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136, 136: 135,
    139: 140, 140: 139, 144: 145, 145: 144,
}  # fmt: skip
_PORT_PROTOS = frozenset((6, 17, 132))
_PORTS = struct.Struct("!HH")


class CommunityIdHasher:
    """Computes Community IDs with one seed. Addresses are packed bytes (4 or 16 long)."""

    __slots__ = ("_prefix", "seed")

    def __init__(self, seed: int = 0) -> None:
        if not 0 <= seed <= 0xFFFF:
            raise ValueError(f"community id seed {seed} is outside 0..65535")
        self.seed = seed
        self._prefix = struct.pack("!H", seed)

    def __call__(
        self,
        protocol: int,
        saddr: bytes,
        daddr: bytes,
        sport: int = 0,
        dport: int = 0,
    ) -> str:
        """ID of a flow seen as one packet saddr:sport -> daddr:dport.

        For ICMP (1) and ICMPv6 (58) pass the message type as `sport` and its code as `dport`.
        """
        one_way = False
        has_ports = True
        if protocol == 1 or protocol == 58:
            pairs = _ICMP4_PAIRS if protocol == 1 else _ICMP6_PAIRS
            counterpart = pairs.get(sport)
            if counterpart is None:
                one_way = True  # (type, code), never reordered
            else:
                dport = counterpart
        elif protocol not in _PORT_PROTOS:
            has_ports = False
        if not one_way and (saddr > daddr or (saddr == daddr and has_ports and sport > dport)):
            saddr, daddr, sport, dport = daddr, saddr, dport, sport
        data = self._prefix + saddr + daddr + bytes((protocol, 0))
        if has_ports:
            data += _PORTS.pack(sport, dport)
        return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def community_id(
    protocol: int, saddr: bytes, daddr: bytes, sport: int = 0, dport: int = 0, seed: int = 0
) -> str:
    """One-off Community ID (see `CommunityIdHasher`)."""
    return CommunityIdHasher(seed)(protocol, saddr, daddr, sport, dport)


def _be_u64(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16-byte addresses (uint8 rows) as (high, low) big-endian uint64 for ordering."""
    words = np.ascontiguousarray(addrs).view(">u8")
    return words[:, 0], words[:, 1]


def community_ids(keys: np.ndarray, seed: int = 0) -> list[str]:
    """Community IDs of a batch of kernel flow keys (port protocols and port-less ones).

    Vectorised: the hash input of every row is assembled with numpy; only SHA-1 and base64 run
    per row. ICMP/ICMPv6 need the message type and go through `CommunityIdHasher` instead.
    """
    m = len(keys)
    out: list[str] = [""] * m
    if m == 0:
        return out
    proto = keys["protocol"]
    ported = np.isin(proto, (6, 17, 132))
    a_hi, a_lo = _be_u64(keys["addr_a"])
    b_hi, b_lo = _be_u64(keys["addr_b"])
    pa, pb = keys["port_a"], keys["port_b"]
    # Community ID order: address bytes, then port (port-less protocols: address only)
    a_first = (a_hi < b_hi) | ((a_hi == b_hi) & (a_lo < b_lo)) | (
        (a_hi == b_hi) & (a_lo == b_lo) & (~ported | (pa <= pb))
    )
    lo_addr = np.where(a_first[:, None], keys["addr_a"], keys["addr_b"])
    hi_addr = np.where(a_first[:, None], keys["addr_b"], keys["addr_a"])
    lo_port = np.where(a_first, pa, pb).astype(">u2")
    hi_port = np.where(a_first, pb, pa).astype(">u2")
    seed_bytes = np.frombuffer(struct.pack("!H", seed), np.uint8)
    sha1, b64 = hashlib.sha1, binascii.b2a_base64
    for version, alen in ((4, 4), (6, 16)):
        for with_ports in (True, False):
            rows = np.flatnonzero((keys["ip_version"] == version) & (ported == with_ports))
            if not len(rows):
                continue
            width = 2 + 2 * alen + 2 + (4 if with_ports else 0)
            buf = np.zeros((len(rows), width), np.uint8)
            buf[:, 0:2] = seed_bytes
            buf[:, 2 : 2 + alen] = lo_addr[rows, :alen]
            buf[:, 2 + alen : 2 + 2 * alen] = hi_addr[rows, :alen]
            buf[:, 2 + 2 * alen] = proto[rows]
            if with_ports:
                buf[:, width - 4 : width - 2] = lo_port[rows].view(np.uint8).reshape(-1, 2)
                buf[:, width - 2 :] = hi_port[rows].view(np.uint8).reshape(-1, 2)
            data = buf.view(np.dtype((np.void, width))).ravel().tolist()
            for i, d in zip(rows.tolist(), data, strict=True):
                out[i] = "1:" + b64(sha1(d).digest(), newline=False).decode("ascii")
    return out
