"""Realistic FlowReports for the export tests and benchmarks (TCP, UDP, ICMP, IPv6, tunnels,
Kubernetes metadata, policies), deterministic for a given seed."""

from __future__ import annotations

import random

from mermin.enrich.k8s.attributes import AttrMap
from mermin.flows.record import EndReason, FlowReport, SpanKind

__all__ = ["flow_reports", "tcp_report"]

_NS = ["default", "kube-system", "shop", "payments"]
_PODS = ["frontend", "cart", "checkout", "redis", "coredns", "api", "worker"]


_POD_META: dict[int, AttrMap] = {}


def _k8s(rng: random.Random, i: int, shared: bool = True) -> dict[str, str]:
    """Metadata of one of ~300 pods (a node's worth): it repeats across flows, as in life.
    `shared`: every report of a pod gets the same read-only `AttrMap` (what the Kubernetes
    enricher hands out from its cache); otherwise each report gets its own plain-dict copy
    (what the static inventory enricher does)."""
    i = rng.randrange(300)
    meta = _POD_META.get(i)
    if meta is None:
        meta = _POD_META[i] = AttrMap(_pod_meta(i))
    return meta if shared else dict(meta)


def _pod_meta(i: int) -> dict[str, str]:
    pod = _PODS[i % len(_PODS)]
    ns = _NS[i % len(_NS)]
    return {
        "pod.name": f"{pod}-7d9f8b6c5-{i % 1000:03d}x",
        "pod.uid": f"2f6b1c3e-0000-4000-8000-{i:012x}",
        "namespace.name": ns,
        "node.name": "node-1",
        "deployment.name": pod,
        "replicaset.name": f"{pod}-7d9f8b6c5",
        "owner.name": pod,
        "owner.type": "Deployment",
        "service.name": f"{pod}-svc",
        "container.name": pod,
    }


def tcp_report(i: int = 0, rng: random.Random | None = None, *, k8s: bool = True,
               shared: bool = True) -> FlowReport:  # fmt: skip
    """One established TCP report with most attributes set (`shared`: see `_k8s`)."""
    rng = rng or random.Random(i)
    start = 1_764_100_000_000_000_000 + i * 1_000_000
    r = FlowReport(
        trace_id=rng.randbytes(16),
        span_id=rng.randbytes(8),
        start_ns=start,
        end_ns=start + rng.randrange(1, 10**10),
        kind=SpanKind.CLIENT,
        community_id="1:" + rng.randbytes(20).hex()[:28] + "=",
        direction="forward",
        end_reason=EndReason.ACTIVE_TIMEOUT,
        ip_version=4,
        protocol=6,
        src_addr=f"10.244.{rng.randrange(4)}.{rng.randrange(1, 255)}",
        dst_addr=f"10.96.{rng.randrange(8)}.{rng.randrange(1, 255)}",
        src_port=rng.randrange(32768, 61000),
        dst_port=rng.choice([80, 443, 6379, 8080, 53]),
        packets_delta=rng.randrange(1, 5000),
        packets_total=rng.randrange(5000, 10**6),
        bytes_delta=rng.randrange(60, 10**7),
        bytes_total=rng.randrange(10**7, 10**11),
        rev_packets_delta=rng.randrange(0, 5000),
        rev_packets_total=rng.randrange(5000, 10**6),
        rev_bytes_delta=rng.randrange(0, 10**7),
        rev_bytes_total=rng.randrange(10**7, 10**11),
        iface_name="eth0",
        iface_index=2,
        tcp_flags=0x1A,
        rev_tcp_flags=0x12,
        tcp_state="established",
        handshake_latency_ns=rng.randrange(10_000, 5_000_000),
        retransmits=rng.randrange(0, 3),
        rev_retransmits=0,
        dscp=0,
        ecn=0,
        ttl=64,
        rev_dscp=46,
        rev_ecn=2,
        rev_ttl=63,
        flow_id=i,
        src_local=True,
    )
    if k8s:
        r.src_k8s = _k8s(rng, i, shared)
        r.dst_k8s = _k8s(rng, i + 1, shared)
        r.policies_ingress = _POLICIES if shared else list(_POLICIES)
    return r


def _udp6(i: int, rng: random.Random) -> FlowReport:
    start = 1_764_100_000_000_000_000 + i * 1_000_000
    return FlowReport(
        trace_id=rng.randbytes(16), span_id=rng.randbytes(8), start_ns=start,
        end_ns=start + 5_000_000, kind=SpanKind.SERVER, community_id="1:udp6=",
        direction="unknown", end_reason=EndReason.IDLE_TIMEOUT, ip_version=6, protocol=17,
        src_addr="fd00::1", dst_addr="fd00::2", src_port=5353, dst_port=53,
        packets_delta=1, packets_total=1, bytes_delta=80, bytes_total=80,
        flow_label=0x12345, rev_flow_label=0xABCDE, ttl=255, dscp=10, ecn=1, vlan_id=100,
        tunnel_type="vxlan", tunnel_id=42, tunnel_src_addr="192.168.1.1",
        tunnel_dst_addr="192.168.1.2", tunnel_src_port=49152, tunnel_dst_port=4789,
        tunnel_ip_version=4, tunnel_protocol=17, process_pid=1234, process_name="coredns",
    )  # fmt: skip


def _icmp(i: int, rng: random.Random) -> FlowReport:
    start = 1_764_100_000_000_000_000 + i * 1_000_000
    return FlowReport(
        trace_id=rng.randbytes(16), span_id=rng.randbytes(8), start_ns=start,
        end_ns=start + 1_000_000_000, kind=SpanKind.INTERNAL, community_id="1:icmp=",
        direction="forward", end_reason=EndReason.END_OF_FLOW, ip_version=4, protocol=1,
        src_addr="10.0.0.1", dst_addr="10.0.0.2", packets_delta=3, packets_total=3,
        bytes_delta=252, bytes_total=252, rev_packets_delta=3, rev_packets_total=3,
        rev_bytes_delta=252, rev_bytes_total=252, icmp_type=8, icmp_code=0, rev_icmp_type=0,
        rev_icmp_code=0, spi=None, policies_egress=["default/allow-all"],
    )  # fmt: skip


_POLICIES = ["shop/allow-frontend", "shop/default-deny"]  # one list shared, as the enricher does


def flow_reports(n: int, seed: int = 1, *, k8s: bool = True, shared: bool = True
                 ) -> list[FlowReport]:  # fmt: skip
    """`n` reports, mostly TCP with Kubernetes metadata, some UDP/IPv6/VXLAN and ICMP
    (`shared`: the enricher's shared read-only metadata maps, else a copy per report)."""
    rng = random.Random(seed)
    out: list[FlowReport] = []
    for i in range(n):
        m = i % 10
        if m == 8:
            out.append(_udp6(i, rng))
        elif m == 9:
            out.append(_icmp(i, rng))
        else:
            out.append(tcp_report(i, rng, k8s=k8s, shared=shared))
    return out
