"""NumPy mirrors of the structs in bpf/flow.h (the kernel/userspace ABI).

The dtypes are declared here once, field by field in the C order, with C alignment
(`align=True`); tests/datapath/test_abi.py reads the BTF of the built object and fails if any
size or offset differs, so the two sides cannot drift silently.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = [
    "ABI_VERSION",
    "CONFIG_DTYPE",
    "COUNTER_MAX",
    "DIR_DTYPE",
    "KEY_DTYPE",
    "VALUE_DTYPE",
    "Counter",
    "Hook",
    "Tunnel",
]

ABI_VERSION = 1  # MERMIN_ABI_VERSION in bpf/flow.h


class Hook(IntEnum):
    INGRESS = 0
    EGRESS = 1


class Tunnel(IntEnum):
    NONE = 0
    VXLAN = 1
    GENEVE = 2
    GRE = 3
    IPIP = 4
    SIT = 5
    IP4IN6 = 6
    IP6IP6 = 7


class Counter(IntEnum):
    """Index of each per-CPU kernel counter (enum mermin_counter)."""

    SEEN = 0
    COUNTED = 1
    DUPLICATE = 2
    UNPARSED_TRUNCATED = 3
    UNPARSED_ETHERTYPE = 4
    UNPARSED_PROTOCOL = 5
    UNPARSED_TOO_DEEP = 6
    MAP_FULL = 7
    FRAG_UNMATCHED = 8
    FRAG_MAP_FULL = 9


COUNTER_MAX = len(Counter)

KEY_DTYPE = np.dtype(
    [
        ("addr_a", "u1", 16),
        ("addr_b", "u1", 16),
        ("port_a", "<u2"),
        ("port_b", "<u2"),
        ("ip_version", "u1"),
        ("protocol", "u1"),
        ("_pad", "u1", 2),
    ],
    align=True,
)

DIR_DTYPE = np.dtype(
    [
        ("packets", "<u8"),
        ("bytes", "<u8"),
        ("tunnel_bytes", "<u8"),
        ("retransmits", "<u4"),
        ("seq_next", "<u4"),
        ("flow_label", "<u4"),
        ("spi", "<u4"),
        ("owner_ifindex", "<u4"),
        ("owner_hook", "u1"),
        ("tcp_flags", "u1"),
        ("dscp", "u1"),
        ("ecn", "u1"),
        ("ttl", "u1"),
        ("icmp_type", "u1"),
        ("icmp_code", "u1"),
        ("seq_valid", "u1"),
    ],
    align=True,
)

VALUE_DTYPE = np.dtype(
    [
        ("first_seen_ns", "<u8"),
        ("last_seen_ns", "<u8"),
        ("tcp_syn_ns", "<u8"),
        ("tcp_synack_ns", "<u8"),
        ("dir", DIR_DTYPE, 2),
        ("tunnel_src", "u1", 16),
        ("tunnel_dst", "u1", 16),
        ("ifindex", "<u4"),
        ("tunnel_id", "<u4"),
        ("vlan_id", "<u2"),
        ("tunnel_sport", "<u2"),
        ("tunnel_dport", "<u2"),
        ("first_side", "u1"),
        ("first_hook", "u1"),
        ("tcp_state", "u1"),
        ("tunnel_type", "u1"),
        ("tunnel_ip_version", "u1"),
        ("tunnel_protocol", "u1"),
        ("_pad", "u1", 6),
    ],
    align=True,
)

CONFIG_DTYPE = np.dtype(
    [
        ("vxlan_port", "<u2"),
        ("geneve_port", "<u2"),
        ("wireguard_port", "<u2"),
        ("replay", "u1"),
        ("_pad", "u1"),
    ],
    align=True,
)
