"""Human-readable names for numeric protocol fields (DSCP, ECN, ICMP, TCP flags and states)."""

from __future__ import annotations

__all__ = [
    "DSCP_NAMES",
    "ECN_NAMES",
    "TCP_FLAG_NAMES",
    "TCP_STATE_NAMES",
    "TRANSPORT_NAMES",
    "TUNNEL_NAMES",
    "dscp_name",
    "ecn_name",
    "icmp_code_name",
    "icmp_type_name",
    "tcp_flag_tags",
    "transport_name",
]

DSCP_NAMES: dict[int, str] = {
    0: "df", 1: "le", 8: "cs1", 10: "af11", 12: "af12", 14: "af13",
    16: "cs2", 18: "af21", 20: "af22", 22: "af23", 24: "cs3", 26: "af31",
    28: "af32", 30: "af33", 32: "cs4", 34: "af41", 36: "af42", 38: "af43",
    40: "cs5", 44: "voice_admit", 45: "nqb", 46: "ef", 48: "cs6", 56: "cs7",
}  # fmt: skip

ECN_NAMES: dict[int, str] = {0: "non-ect", 1: "ect1", 2: "ect0", 3: "ce"}

TCP_FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (0x01, "fin"), (0x02, "syn"), (0x04, "rst"), (0x08, "psh"),
    (0x10, "ack"), (0x20, "urg"), (0x40, "ece"), (0x80, "cwr"),
)  # fmt: skip

TCP_STATE_NAMES: tuple[str, ...] = (
    "closed", "listen", "syn_sent", "syn_received", "established", "fin_wait_1",
    "fin_wait_2", "close_wait", "closing", "last_ack", "time_wait",
)  # fmt: skip

TRANSPORT_NAMES: dict[int, str] = {
    1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 46: "rsvp",
    47: "gre", 50: "esp", 51: "ah", 58: "icmpv6", 89: "ospf", 103: "pim",
    112: "vrrp", 132: "sctp", 136: "udplite",
}  # fmt: skip

TUNNEL_NAMES: dict[int, str] = {
    1: "vxlan", 2: "geneve", 3: "gre", 4: "ipip", 5: "sit", 6: "ip4in6", 7: "ip6ip6",
}

_ICMP4_TYPES: dict[int, str] = {
    0: "echo_reply", 3: "destination_unreachable", 4: "source_quench", 5: "redirect",
    8: "echo_request", 9: "router_advertisement", 10: "router_solicitation",
    11: "time_exceeded", 12: "parameter_problem", 13: "timestamp_request",
    14: "timestamp_reply", 15: "information_request", 16: "information_reply",
    17: "address_mask_request", 18: "address_mask_reply",
}  # fmt: skip

_ICMP6_TYPES: dict[int, str] = {
    1: "destination_unreachable", 2: "packet_too_big", 3: "time_exceeded",
    4: "parameter_problem", 128: "echo_request", 129: "echo_reply",
    130: "multicast_listener_query", 131: "multicast_listener_report",
    132: "multicast_listener_done", 133: "router_solicitation",
    134: "router_advertisement", 135: "neighbor_solicitation",
    136: "neighbor_advertisement", 137: "redirect", 143: "multicast_listener_report_v2",
}  # fmt: skip

_ICMP4_CODES: dict[int, dict[int, str]] = {
    3: {
        0: "net_unreachable", 1: "host_unreachable", 2: "protocol_unreachable",
        3: "port_unreachable", 4: "fragmentation_needed", 5: "source_route_failed",
        6: "destination_network_unknown", 7: "destination_host_unknown",
        9: "network_administratively_prohibited", 10: "host_administratively_prohibited",
        13: "communication_administratively_prohibited",
    },
    5: {0: "redirect_network", 1: "redirect_host", 2: "redirect_tos_network",
        3: "redirect_tos_host"},
    11: {0: "ttl_exceeded_in_transit", 1: "fragment_reassembly_time_exceeded"},
}  # fmt: skip

_ICMP6_CODES: dict[int, dict[int, str]] = {
    1: {
        0: "no_route_to_destination", 1: "communication_administratively_prohibited",
        2: "beyond_scope_of_source_address", 3: "address_unreachable",
        4: "port_unreachable", 5: "source_address_failed_policy", 6: "reject_route",
    },
    3: {0: "hop_limit_exceeded_in_transit", 1: "fragment_reassembly_time_exceeded"},
    4: {0: "erroneous_header_field", 1: "unrecognized_next_header",
        2: "unrecognized_ipv6_option"},
}  # fmt: skip


def dscp_name(dscp: int) -> str:
    """Name of a DSCP code point (`ef`, `af21`, ...) or its decimal value."""
    return DSCP_NAMES.get(dscp, str(dscp))


def ecn_name(ecn: int) -> str:
    """Name of an ECN code point."""
    return ECN_NAMES.get(ecn, str(ecn))


def icmp_type_name(icmp_type: int, v6: bool) -> str:
    """Name of an ICMP or ICMPv6 type, or its decimal value."""
    return (_ICMP6_TYPES if v6 else _ICMP4_TYPES).get(icmp_type, str(icmp_type))


def icmp_code_name(icmp_type: int, icmp_code: int, v6: bool) -> str:
    """Name of an ICMP code for its type; `0` codes of query types are `no_code`."""
    codes = (_ICMP6_CODES if v6 else _ICMP4_CODES).get(icmp_type)
    if codes is None:
        return "no_code" if icmp_code == 0 else str(icmp_code)
    return codes.get(icmp_code, str(icmp_code))


def tcp_flag_tags(bits: int) -> list[str]:
    """Lowercase names of the TCP flags set in `bits`, in wire order."""
    return [name for bit, name in TCP_FLAG_NAMES if bits & bit]


def transport_name(protocol: int) -> str:
    """Lowercase IANA name of an IP protocol number, or its decimal value."""
    return TRANSPORT_NAMES.get(protocol, str(protocol))
