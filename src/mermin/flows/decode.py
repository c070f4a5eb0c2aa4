"""Vectorised views over batches of kernel flow entries (`KEY_DTYPE` / `VALUE_DTYPE` arrays).

Everything here works on whole batches with numpy; nothing loops per flow except the address
formatting, which is cached per flow by the table.
"""

from __future__ import annotations

import socket
from functools import lru_cache

import numpy as np

from mermin.config.span import SpanConfig
from mermin.datapath.abi import KEY_DTYPE

__all__ = [
    "ACK",
    "FIN",
    "PORT_PROTOCOLS",
    "RST",
    "SYN",
    "addr_bytes",
    "addr_str",
    "end_of_flow",
    "key_ids",
    "timeouts_ns",
    "totals",
]

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
TCP, UDP, ICMP, ICMPV6, SCTP = 6, 17, 1, 58, 132
PORT_PROTOCOLS = (TCP, UDP, SCTP)
_KEY_VOID = np.dtype((np.void, KEY_DTYPE.itemsize))


def key_ids(keys: np.ndarray) -> list[bytes]:
    """The raw bytes of each key: hashable ids for per-flow state (one C-level pass)."""
    return np.ascontiguousarray(keys).view(_KEY_VOID).ravel().tolist()


def totals(values: np.ndarray) -> np.ndarray:
    """(n, 4) int64: packets a->b, bytes a->b, packets b->a, bytes b->a."""
    d = values["dir"]
    out = np.empty((len(values), 4), dtype=np.int64)
    out[:, 0] = d["packets"][:, 0]
    out[:, 1] = d["bytes"][:, 0]
    out[:, 2] = d["packets"][:, 1]
    out[:, 3] = d["bytes"][:, 1]
    return out


# observer states once the last FIN has been acknowledged (enum mermin_tcp_state)
_CLOSED_STATES = np.array([0, 10], dtype=np.uint8)  # closed, time_wait


def _flag_masks(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rst, fin_both) per flow; both False for non-TCP flows."""
    tcp = keys["protocol"] == TCP
    flags = values["dir"]["tcp_flags"]
    fa, fb = flags[:, 0], flags[:, 1]
    rst = tcp & (((fa | fb) & RST) != 0)
    fin_both = tcp & ((fa & FIN) != 0) & ((fb & FIN) != 0)
    return rst, fin_both


def end_of_flow(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """True where the TCP connection has ended on the wire: a RST, or FIN in both directions."""
    rst, fin_both = _flag_masks(keys, values)
    return rst | fin_both


def timeouts_ns(keys: np.ndarray, values: np.ndarray, cfg: SpanConfig) -> np.ndarray:
    """Idle timeout of each flow in ns, following TCP state as FIN/RST arrive."""
    proto = keys["protocol"]
    rst, fin_both = _flag_masks(keys, values)
    closed = fin_both & np.isin(values["tcp_state"], _CLOSED_STATES)
    conditions = [rst, closed, fin_both, proto == TCP, proto == UDP,
                  (proto == ICMP) | (proto == ICMPV6)]  # fmt: skip
    choices = [cfg.tcp_rst_timeout, cfg.tcp_close_linger, cfg.tcp_fin_timeout, cfg.tcp_timeout,
               cfg.udp_timeout, cfg.icmp_timeout]  # fmt: skip
    seconds = np.select(conditions, choices, cfg.generic_timeout)
    return (seconds * 1e9).astype(np.int64)


@lru_cache(maxsize=65536)
def addr_str(raw: bytes, ip_version: int) -> str:
    """Text form of a key address (16 bytes, IPv4 in the first 4)."""
    if ip_version == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


def addr_bytes(raw: bytes, ip_version: int) -> bytes:
    """Packed address of its own length (4 or 16 bytes)."""
    return raw[:4] if ip_version == 4 else raw
