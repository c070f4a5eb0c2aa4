"""The flow report: one record per report of a flow, the type every stage after the flow table
passes along (enrich -> filter -> export).

`FlowReport.attributes()` is the single place that turns a report into the attribute keys of
SCHEMA.md (docs/attributes.md); stdout and OTLP both use it or mirror it field for field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from mermin.flows import names

__all__ = ["EndReason", "FlowReport", "SpanKind"]

AttributeValue = str | int | list[str]


class SpanKind(IntEnum):
    """OTLP span kinds (values as in opentelemetry.proto.trace.v1.Span.SpanKind)."""

    INTERNAL = 1
    SERVER = 2
    CLIENT = 3


class EndReason:
    """Values of `flow.end_reason`."""

    ACTIVE_TIMEOUT = "active_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    END_OF_FLOW = "end_of_flow"
    FORCED_END = "forced_end"
    LACK_OF_RESOURCES = "lack_of_resources"


@dataclass(slots=True)
class FlowReport:
    """One report of one flow. `src` is the initiator; unprefixed counters are src->dst.

    Optional fields are None when they do not apply (e.g. ports for ICMP, TCP fields for UDP,
    reverse IP fields when the destination never answered).
    """

    trace_id: bytes  # 16 bytes, one per flow, reused by every report of it
    span_id: bytes  # 8 bytes, new per report
    start_ns: int  # wall clock of the first packet of the flow
    end_ns: int  # wall clock of the last packet seen up to this report
    kind: SpanKind
    community_id: str
    direction: str  # "forward" (initiator determined) or "unknown" (guessed)
    end_reason: str  # EndReason.*
    ip_version: int  # 4 or 6
    protocol: int  # IANA number of the (inner) transport
    src_addr: str
    dst_addr: str
    src_port: int | None = None
    dst_port: int | None = None
    packets_delta: int = 0
    packets_total: int = 0
    bytes_delta: int = 0
    bytes_total: int = 0
    rev_packets_delta: int = 0
    rev_packets_total: int = 0
    rev_bytes_delta: int = 0
    rev_bytes_total: int = 0
    iface_name: str | None = None
    iface_index: int | None = None
    vlan_id: int | None = None
    # TCP
    tcp_flags: int | None = None
    rev_tcp_flags: int | None = None
    tcp_state: str | None = None
    handshake_latency_ns: int | None = None
    retransmits: int | None = None
    rev_retransmits: int | None = None
    # IP header facts, per direction
    dscp: int | None = None
    ecn: int | None = None
    ttl: int | None = None
    flow_label: int | None = None
    rev_dscp: int | None = None
    rev_ecn: int | None = None
    rev_ttl: int | None = None
    rev_flow_label: int | None = None
    # ICMP / ICMPv6
    icmp_type: int | None = None
    icmp_code: int | None = None
    rev_icmp_type: int | None = None
    rev_icmp_code: int | None = None
    # ESP/AH SPI, WireGuard receiver index
    spi: int | None = None
    rev_spi: int | None = None
    # tunnel (outer header of the first packet)
    tunnel_type: str | None = None
    tunnel_id: int | None = None
    tunnel_src_addr: str | None = None
    tunnel_dst_addr: str | None = None
    tunnel_src_port: int | None = None
    tunnel_dst_port: int | None = None
    tunnel_ip_version: int | None = None
    tunnel_protocol: int | None = None
    # enrichment (filled after the flow table)
    src_k8s: dict[str, str] = field(default_factory=dict)  # keys without the prefix: "pod.name"
    dst_k8s: dict[str, str] = field(default_factory=dict)
    policies_ingress: list[str] | None = None
    policies_egress: list[str] | None = None
    process_pid: int | None = None
    process_name: str | None = None
    flow_id: int = 0  # opaque id of the flow inside the agent (not exported)
    src_local: bool = False  # initiator address belongs to this node (for span kind)
    dst_local: bool = False

    @property
    def network_type(self) -> str:
        return "ipv6" if self.ip_version == 6 else "ipv4"

    @property
    def transport(self) -> str:
        return names.transport_name(self.protocol)

    @property
    def name(self) -> str:
        """Span name, e.g. `flow_ipv4_tcp`."""
        return f"flow_{self.network_type}_{self.transport}"

    def attributes(self) -> dict[str, AttributeValue]:
        """The report's attributes with SCHEMA.md keys, omitting those that do not apply."""
        a: dict[str, AttributeValue] = {
            "flow.community_id": self.community_id,
            "flow.direction": self.direction,
            "flow.end_reason": self.end_reason,
            "network.type": self.network_type,
            "network.transport": self.transport,
            "source.address": self.src_addr,
            "destination.address": self.dst_addr,
        }
        if self.src_port is not None:
            a["source.port"] = self.src_port
        if self.dst_port is not None:
            a["destination.port"] = self.dst_port
        a["flow.bytes.delta"] = self.bytes_delta
        a["flow.bytes.total"] = self.bytes_total
        a["flow.packets.delta"] = self.packets_delta
        a["flow.packets.total"] = self.packets_total
        a["flow.reverse.bytes.delta"] = self.rev_bytes_delta
        a["flow.reverse.bytes.total"] = self.rev_bytes_total
        a["flow.reverse.packets.delta"] = self.rev_packets_delta
        a["flow.reverse.packets.total"] = self.rev_packets_total
        if self.iface_name is not None:
            a["network.interface.name"] = self.iface_name
        if self.iface_index is not None:
            a["network.interface.index"] = self.iface_index
        if self.vlan_id:
            a["network.vlan.id"] = self.vlan_id
        self._tcp_attributes(a)
        self._ip_attributes(a)
        self._icmp_attributes(a)
        self._tunnel_attributes(a)
        for key, value in self.src_k8s.items():
            a["source.k8s." + key] = value
        for key, value in self.dst_k8s.items():
            a["destination.k8s." + key] = value
        if self.policies_ingress:
            a["network.policies.ingress"] = list(self.policies_ingress)
        if self.policies_egress:
            a["network.policies.egress"] = list(self.policies_egress)
        if self.process_pid is not None:
            a["process.pid"] = self.process_pid
        if self.process_name is not None:
            a["process.executable.name"] = self.process_name
        return a

    def _tcp_attributes(self, a: dict[str, AttributeValue]) -> None:
        if self.tcp_flags is not None:
            a["flow.tcp.flags.bits"] = self.tcp_flags
            a["flow.tcp.flags.tags"] = names.tcp_flag_tags(self.tcp_flags)
        if self.rev_tcp_flags is not None:
            a["flow.reverse.tcp.flags.bits"] = self.rev_tcp_flags
            a["flow.reverse.tcp.flags.tags"] = names.tcp_flag_tags(self.rev_tcp_flags)
        if self.tcp_state is not None:
            a["flow.connection.state"] = self.tcp_state
        if self.handshake_latency_ns is not None:
            a["flow.tcp.handshake.latency"] = self.handshake_latency_ns
        if self.retransmits is not None:
            a["flow.tcp.retransmits"] = self.retransmits
        if self.rev_retransmits is not None:
            a["flow.reverse.tcp.retransmits"] = self.rev_retransmits

    def _ip_attributes(self, a: dict[str, AttributeValue]) -> None:
        for prefix, dscp, ecn, ttl, label in (
            ("flow.ip.", self.dscp, self.ecn, self.ttl, self.flow_label),
            ("flow.reverse.ip.", self.rev_dscp, self.rev_ecn, self.rev_ttl, self.rev_flow_label),
        ):
            if dscp is not None:
                a[prefix + "dscp.id"] = dscp
                a[prefix + "dscp.name"] = names.dscp_name(dscp)
            if ecn is not None:
                a[prefix + "ecn.id"] = ecn
                a[prefix + "ecn.name"] = names.ecn_name(ecn)
            if ttl is not None:
                a[prefix + "ttl"] = ttl
            if label is not None and self.ip_version == 6:
                a[prefix + "flow_label"] = label

    def _icmp_attributes(self, a: dict[str, AttributeValue]) -> None:
        v6 = self.ip_version == 6
        for prefix, itype, icode in (
            ("flow.icmp.", self.icmp_type, self.icmp_code),
            ("flow.reverse.icmp.", self.rev_icmp_type, self.rev_icmp_code),
        ):
            if itype is None:
                continue
            code = icode or 0
            a[prefix + "type.id"] = itype
            a[prefix + "type.name"] = names.icmp_type_name(itype, v6)
            a[prefix + "code.id"] = code
            a[prefix + "code.name"] = names.icmp_code_name(itype, code, v6)

    def _tunnel_attributes(self, a: dict[str, AttributeValue]) -> None:
        if self.spi is not None or self.rev_spi is not None:
            if self.protocol == 50:
                spi_key = "flow.ipsec.esp.spi"
            elif self.protocol == 51:
                spi_key = "flow.ipsec.ah.spi"
            else:
                spi_key = "flow.wireguard.receiver.index"
            if self.spi is not None:
                a[spi_key] = self.spi
            if self.rev_spi is not None:
                a[spi_key.replace("flow.", "flow.reverse.", 1)] = self.rev_spi
        if self.tunnel_type is None:
            return
        a["tunnel.type"] = self.tunnel_type
        optional: tuple[tuple[str, Any], ...] = (
            ("tunnel.id", self.tunnel_id),
            ("tunnel.source.address", self.tunnel_src_addr),
            ("tunnel.destination.address", self.tunnel_dst_addr),
            ("tunnel.source.port", self.tunnel_src_port),
            ("tunnel.destination.port", self.tunnel_dst_port),
        )
        for key, value in optional:
            if value is not None:
                a[key] = value
        if self.tunnel_ip_version is not None:
            a["tunnel.network.type"] = "ipv6" if self.tunnel_ip_version == 6 else "ipv4"
        if self.tunnel_protocol is not None:
            a["tunnel.network.transport"] = names.transport_name(self.tunnel_protocol)
