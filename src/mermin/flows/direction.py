"""Who started a flow (source = initiator) and how the node relates to it (span kind).

The kernel key has normalized sides a/b plus `first_side` (who sent the first packet we saw).
Rules, first match wins, per flow:

1. TCP handshake: the first packet was a SYN -> its sender; it was a SYN-ACK -> its receiver;
   otherwise a pure SYN or a SYN-ACK seen from one side only names the sides.   determined
2. ICMP/ICMPv6 query: the side that sent a request type (echo, timestamp, ...) or received
   a reply type.                                                                determined
3. A socket on this node (host or any pod netns) listens on exactly one of the endpoints
   (TCP LISTEN, bound unconnected UDP; wildcard addresses included): the other side.
                                                                                determined
4. Ports (TCP/UDP/SCTP): a well-known port (< 1024) against a non-well-known one, else the
   lower port, is the server.                                                   guessed
5. The sender of the first packet.                                              guessed

Span kind: CLIENT when the initiator's address is local to the node, SERVER when only the
responder's is, INTERNAL otherwise.

The node snapshot (listening sockets, local addresses) is refreshed periodically. A batch with
a new flow of which neither end is local usually means a pod started since the last scan: the
resolver then rescans once before deciding, at most once per `min_refresh_gap` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mermin.flows.decode import ACK, ICMP, ICMPV6, PORT_PROTOCOLS, SYN, TCP
from mermin.flows.listening import NodeSockets
from mermin.flows.record import SpanKind

__all__ = ["ICMP_REPLIES", "ICMP_REQUESTS", "DirectionResolver", "span_kind"]

ICMP_REQUESTS = {ICMP: (8, 13, 15, 17, 10), ICMPV6: (128, 130, 133, 135, 139, 144)}
ICMP_REPLIES = {ICMP: (0, 14, 16, 18, 9), ICMPV6: (129, 131, 134, 136, 140, 145)}


def _side_of(mask_a: np.ndarray, mask_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, initiator_is_b) where exactly one of the masks holds."""
    return mask_a ^ mask_b, mask_b & ~mask_a


class DirectionResolver:
    """Resolves initiator side and locality for a batch of flows seen for the first time."""

    def __init__(
        self,
        sockets: Callable[[], NodeSockets] | None = None,
        *,
        refresh: Callable[[], object] | None = None,
        min_refresh_gap: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`sockets` returns the current snapshot; `refresh` rescans the node now (after
        which `sockets` returns the new snapshot)."""
        self._sockets = sockets
        self._refresh = refresh
        self._gap = min_refresh_gap
        self._clock = clock
        self._last_refresh = -float("inf")
        self.forced_refreshes = 0

    def _freshen(self, keys: np.ndarray) -> None:
        """Rescan now if a new flow has no local end in the snapshot (rate-limited)."""
        if self._refresh is None or self._sockets is None or len(keys) == 0:
            return
        now = self._clock()
        if now - self._last_refresh < self._gap:
            return
        local = self._sockets().local_addrs
        pairs = zip(_rows(keys["addr_a"]), _rows(keys["addr_b"]), strict=True)
        if all(aa in local or ab in local for aa, ab in pairs):
            return
        self._last_refresh = now
        self.forced_refreshes += 1
        self._refresh()

    def resolve(self, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(src_is_b, determined) boolean arrays for the flows of the batch."""
        self._freshen(keys)
        n = len(keys)
        src_is_b = values["first_side"].astype(bool)  # rule 5 unless something better
        determined = np.zeros(n, dtype=bool)
        decided = np.zeros(n, dtype=bool)

        def apply(found: np.ndarray, is_b: np.ndarray, sure: bool) -> None:
            take = found & ~decided
            src_is_b[take] = is_b[take]
            determined[take] = sure
            decided[take] = True

        proto = keys["protocol"]
        first_side = values["first_side"].astype(bool)
        # 1. TCP handshake
        tcp = proto == TCP
        syn_ns, synack_ns, first_ns = values["tcp_syn_ns"], values["tcp_synack_ns"], values[
            "first_seen_ns"
        ]
        syn_first = tcp & (syn_ns != 0) & (syn_ns == first_ns)
        apply(syn_first, first_side, True)
        synack_first = tcp & (synack_ns != 0) & (synack_ns == first_ns)
        apply(synack_first, ~first_side, True)
        flags = values["dir"]["tcp_flags"]
        has_syn = (flags & SYN) != 0
        only_syn = tcp & (syn_ns != 0) & (synack_ns == 0)  # no SYN-ACK anywhere: SYN sender
        found, is_b = _side_of(has_syn[:, 0], has_syn[:, 1])
        apply(only_syn & found, is_b, True)
        only_synack = tcp & (syn_ns == 0) & (synack_ns != 0)  # SYN-ACK sender is the server
        synack_side = has_syn & ((flags & ACK) != 0)
        found, is_b = _side_of(synack_side[:, 0], synack_side[:, 1])
        apply(only_synack & found, ~is_b, True)
        # 2. ICMP query types
        icmp = (proto == ICMP) | (proto == ICMPV6)
        if icmp.any():
            itype = values["dir"]["icmp_type"]
            sent = values["dir"]["packets"] > 0
            req = np.zeros((n, 2), dtype=bool)
            rep = np.zeros((n, 2), dtype=bool)
            for p in (ICMP, ICMPV6):
                on = (proto == p)[:, None] & sent
                req |= on & np.isin(itype, ICMP_REQUESTS[p])
                rep |= on & np.isin(itype, ICMP_REPLIES[p])
            initiator_a = req[:, 0] | rep[:, 1]
            initiator_b = req[:, 1] | rep[:, 0]
            found, is_b = _side_of(initiator_a, initiator_b)
            apply(icmp & found, is_b, True)
        ported = np.isin(proto, PORT_PROTOCOLS)
        # 3. listening sockets of this node
        snapshot = self._sockets() if self._sockets is not None else None
        if snapshot is not None and snapshot.listeners:
            pending = np.flatnonzero(ported & ~decided)
            if len(pending):
                sub = keys[pending]
                la = np.zeros(len(pending), dtype=bool)
                lb = np.zeros(len(pending), dtype=bool)
                for i, (aa, ab, pa, pb, pr) in enumerate(
                    zip(_rows(sub["addr_a"]), _rows(sub["addr_b"]), sub["port_a"].tolist(),
                        sub["port_b"].tolist(), sub["protocol"].tolist(), strict=False)
                ):
                    la[i] = snapshot.is_listening(aa, pa, pr)
                    lb[i] = snapshot.is_listening(ab, pb, pr)
                found, server_is_b = _side_of(la, lb)
                full_found = np.zeros(n, dtype=bool)
                full_is_b = np.zeros(n, dtype=bool)
                full_found[pending] = found
                full_is_b[pending] = ~server_is_b
                apply(full_found, full_is_b, True)
        # 4. ports
        pa = keys["port_a"].astype(np.int32)
        pb = keys["port_b"].astype(np.int32)
        wa, wb = pa < 1024, pb < 1024
        server_a = np.where(wa != wb, wa, pa < pb)
        differs = pa != pb
        apply(ported & differs, server_a, False)  # server a -> initiator is b
        return src_is_b, determined

    def locality(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a_local, b_local): whether each side's address belongs to this node."""
        n = len(keys)
        a_local = np.zeros(n, dtype=bool)
        b_local = np.zeros(n, dtype=bool)
        snapshot = self._sockets() if self._sockets is not None else None
        if snapshot is None or not snapshot.local_addrs or n == 0:
            return a_local, b_local
        local = snapshot.local_addrs
        pairs = zip(_rows(keys["addr_a"]), _rows(keys["addr_b"]), strict=True)
        for i, (aa, ab) in enumerate(pairs):
            a_local[i] = aa in local
            b_local[i] = ab in local
        return a_local, b_local


def span_kind(src_local: bool, dst_local: bool) -> SpanKind:
    """CLIENT if the initiator is local, SERVER if only the responder is, else INTERNAL."""
    if src_local:
        return SpanKind.CLIENT
    if dst_local:
        return SpanKind.SERVER
    return SpanKind.INTERNAL


def _rows(addrs: np.ndarray) -> list[bytes]:
    """16-byte address rows as bytes objects."""
    return np.ascontiguousarray(addrs).view(np.dtype((np.void, 16))).ravel().tolist()
