"""FlowReport.attributes(): the SCHEMA.md keys, types and presence rules."""

from __future__ import annotations

from mermin.flows.record import EndReason, FlowReport, SpanKind


def make(**kw: object) -> FlowReport:
    base: dict[str, object] = dict(
        trace_id=bytes(range(16)), span_id=bytes(range(8)), start_ns=1, end_ns=2,
        kind=SpanKind.CLIENT, community_id="1:abc=", direction="forward",
        end_reason=EndReason.ACTIVE_TIMEOUT, ip_version=4, protocol=6,
        src_addr="10.0.0.1", dst_addr="10.0.0.2", src_port=40000, dst_port=80,
    )
    base.update(kw)
    return FlowReport(**base)  # type: ignore[arg-type]


def test_tcp_report_has_schema_keys_with_types() -> None:
    r = make(packets_delta=3, packets_total=5, bytes_delta=180, bytes_total=300,
             rev_packets_total=4, tcp_flags=0x1A, rev_tcp_flags=0x12, tcp_state="established",
             handshake_latency_ns=1500, retransmits=1, rev_retransmits=0, dscp=46, ecn=2, ttl=64,
             iface_name="veth1", iface_index=7, vlan_id=100)
    a = r.attributes()
    assert r.name == "flow_ipv4_tcp"
    assert a["network.type"] == "ipv4" and a["network.transport"] == "tcp"
    assert a["source.port"] == 40000 and a["destination.port"] == 80
    assert a["flow.packets.delta"] == 3 and a["flow.bytes.total"] == 300
    assert a["flow.reverse.packets.total"] == 4 and a["flow.reverse.bytes.total"] == 0
    assert a["flow.tcp.flags.tags"] == ["syn", "psh", "ack"]
    assert a["flow.reverse.tcp.flags.tags"] == ["syn", "ack"]
    assert a["flow.connection.state"] == "established"
    assert a["flow.tcp.handshake.latency"] == 1500
    assert a["flow.ip.dscp.name"] == "ef" and a["flow.ip.ecn.name"] == "ect0"
    assert a["network.vlan.id"] == 100 and a["network.interface.name"] == "veth1"
    assert "flow.ip.flow_label" not in a  # IPv6 only
    assert "flow.icmp.type.id" not in a and "tunnel.type" not in a


def test_icmp_report_has_no_ports_and_named_types() -> None:
    r = make(protocol=1, src_port=None, dst_port=None, icmp_type=8, icmp_code=0,
             rev_icmp_type=0, rev_icmp_code=0)
    a = r.attributes()
    assert r.name == "flow_ipv4_icmp"
    assert "source.port" not in a
    assert a["flow.icmp.type.name"] == "echo_request"
    assert a["flow.reverse.icmp.type.name"] == "echo_reply"


def test_ipv6_tunnel_k8s_and_policies() -> None:
    r = make(ip_version=6, protocol=17, src_addr="fd00::1", dst_addr="fd00::2", flow_label=77,
             tunnel_type="vxlan", tunnel_id=42, tunnel_src_addr="192.0.2.1",
             tunnel_dst_addr="192.0.2.2", tunnel_src_port=5555, tunnel_dst_port=4789,
             tunnel_ip_version=4, tunnel_protocol=17, src_k8s={"pod.name": "a"},
             dst_k8s={"service.name": "b"}, policies_ingress=["ns/allow"])
    a = r.attributes()
    assert a["flow.ip.flow_label"] == 77
    assert a["tunnel.type"] == "vxlan" and a["tunnel.id"] == 42
    assert a["tunnel.network.type"] == "ipv4" and a["tunnel.network.transport"] == "udp"
    assert a["source.k8s.pod.name"] == "a" and a["destination.k8s.service.name"] == "b"
    assert a["network.policies.ingress"] == ["ns/allow"]
    assert "network.policies.egress" not in a


def test_esp_spi_per_direction() -> None:
    a = make(protocol=50, src_port=None, dst_port=None, spi=0x1000, rev_spi=0x2000).attributes()
    assert a["flow.ipsec.esp.spi"] == 0x1000
    assert a["flow.reverse.ipsec.esp.spi"] == 0x2000
