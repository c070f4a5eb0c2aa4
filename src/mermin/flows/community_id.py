"""Community ID v1 (https://github.com/corelight/community-id-spec), as the reference `communityid`
package computes it: SHA-1 over seed, ordered endpoints, protocol and ports, base64-encoded.

ICMP/ICMPv6 messages use (type, counterpart type) as ports so a request and its reply hash the
same; messages without a counterpart (errors) are one-way: (type, code), never reordered.
"""

from __future__ import annotations

import base64
import hashlib
import struct

__all__ = ["CommunityIdHasher", "community_id"]

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
