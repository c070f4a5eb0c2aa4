"""The hand encoder against the official opentelemetry-proto messages: same bytes, same values."""

from __future__ import annotations

import dataclasses
import json
import random

from google.protobuf.internal.encoder import _VarintBytes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.export.otlp_helpers import attrs_of, official_request, spans_of
from tests.export.samples import flow_reports, tcp_report

import mermin
from mermin.export.encode import SpanEncoder, encode_json, varint
from mermin.flows.record import EndReason, FlowReport, SpanKind

RESOURCE = {
    "service.name": "mermin",
    "service.version": mermin.__version__,
    "host.name": "node-1.example",
    "host.id": "0123456789abcdef0123456789abcdef",
    "k8s.node.name": "node-1",
}


def _variants() -> list[FlowReport]:
    """Reports exercising every optional branch of FlowReport.attributes()."""
    base = tcp_report(7)
    rng = random.Random(3)
    bare = FlowReport(
        trace_id=rng.randbytes(16), span_id=rng.randbytes(8), start_ns=0, end_ns=2**64 - 1,
        kind=SpanKind.INTERNAL, community_id="", direction="unknown",
        end_reason=EndReason.LACK_OF_RESOURCES, ip_version=4, protocol=47,
        src_addr="1.1.1.1", dst_addr="2.2.2.2",
    )  # fmt: skip
    out = [
        base,
        bare,
        dataclasses.replace(bare, protocol=50, spi=0xDEADBEEF, rev_spi=1),  # ESP
        dataclasses.replace(bare, protocol=51, spi=7),  # AH
        dataclasses.replace(bare, protocol=17, rev_spi=2**32 - 1, src_port=51820,
                            dst_port=51820),
        dataclasses.replace(bare, ip_version=6, protocol=58, icmp_type=128, icmp_code=None,
                            rev_icmp_type=129, rev_icmp_code=0, flow_label=0xFFFFF,
                            rev_flow_label=0, dscp=46, rev_ecn=3),
        dataclasses.replace(bare, protocol=1, icmp_type=3, icmp_code=3, ttl=1),
        dataclasses.replace(bare, ip_version=4, flow_label=5),  # v4 never exports flow labels
        dataclasses.replace(bare, vlan_id=4094, iface_index=0, iface_name=""),
        dataclasses.replace(bare, tunnel_type="geneve", tunnel_protocol=17, tunnel_ip_version=6,
                            tunnel_src_port=1, tunnel_dst_port=6081),
        dataclasses.replace(bare, tunnel_type="gre"),
        dataclasses.replace(bare, tcp_state="syn_sent", protocol=6),
        dataclasses.replace(bare, rev_tcp_flags=0xFF, protocol=6, rev_retransmits=70000),
        dataclasses.replace(bare, process_pid=2**31 - 1, process_name="ünïcödé ✓"),
        dataclasses.replace(bare, src_port=65535, dst_port=0, packets_delta=2**63 - 1,
                            bytes_total=2**40, bytes_delta=127, packets_total=128,
                            rev_bytes_delta=16383, rev_bytes_total=16384,
                            rev_packets_delta=2**21, rev_packets_total=2**28),
        dataclasses.replace(
            bare,
            src_k8s={"pod.name": "p" * 300, "pod.label.app": "web", "namespace.name": "ns"},
            dst_k8s={"service.name": "s"},
            policies_ingress=["a/b"] * 40,
            policies_egress=["x" * 200],
        ),
        dataclasses.replace(bare, src_addr="fd00:1234:5678:9abc:def0:1234:5678:9abc",
                            community_id="1:" + "z" * 200),
    ]
    out.extend(flow_reports(40, seed=5))
    return out


def test_varint_matches_protobuf() -> None:
    values = [0, 1, 127, 128, 255, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28,
              2**35 - 1, 2**35, 2**42, 2**56, 2**63 - 1, 2**64 - 1]  # fmt: skip
    values += [random.Random(i).randrange(2**64) for i in range(200)]
    for v in values:
        assert varint(v) == _VarintBytes(v), v
    # negative int64 is the 10-byte two's complement, as protobuf writes int_value
    for v in (-1, -128, -(2**63)):
        assert varint(v) == _VarintBytes(v + 2**64)


def test_bytes_identical_to_official_messages() -> None:
    reports = _variants()
    enc = SpanEncoder(RESOURCE)
    ours = enc.encode(reports)
    assert ours == official_request(reports, RESOURCE)
    # a second pass through warm caches gives the same bytes
    assert enc.encode(reports) == ours
    # the per-report reference path too
    assert enc.encode_slow(reports) == ours
    assert SpanEncoder(RESOURCE).encode_slow(reports) == ours
    # and one span at a time
    for r in reports:
        assert enc.encode([r]) == official_request([r], RESOURCE)
        assert enc.encode_slow([r]) == official_request([r], RESOURCE)


def test_decoded_values_types_and_envelope() -> None:
    reports = _variants()
    req = ExportTraceServiceRequest()
    req.ParseFromString(SpanEncoder(RESOURCE).encode(reports))
    assert len(req.resource_spans) == 1
    rs = req.resource_spans[0]
    assert attrs_of(rs.resource.attributes) == RESOURCE
    assert rs.scope_spans[0].scope.name == "mermin"
    assert rs.scope_spans[0].scope.version == mermin.__version__
    spans = spans_of(req)
    assert len(spans) == len(reports)
    for span, r in zip(spans, reports, strict=True):
        assert span.trace_id == r.trace_id
        assert span.span_id == r.span_id
        assert span.parent_span_id == b""
        assert span.name == r.name
        assert span.kind == int(r.kind)
        assert span.start_time_unix_nano == r.start_ns
        assert span.end_time_unix_nano == r.end_ns
        got = attrs_of(span.attributes)
        want = r.attributes()
        assert got == want
        for k, v in want.items():  # int stays int, str stays str, lists are string arrays
            assert type(got[k]) is type(v), k
        for k in ("flow.tcp.flags.tags", "network.policies.ingress"):
            if k in got:
                assert span.attributes[list(got).index(k)].value.HasField("array_value")


def test_small_cache_limit_still_correct() -> None:
    reports = flow_reports(200, seed=9)
    enc = SpanEncoder(RESOURCE, cache_limit=3)
    assert enc.encode(reports) == official_request(reports, RESOURCE)
    assert enc.encode_slow(reports) == official_request(reports, RESOURCE)
    assert len(enc._chunks) <= 3 and len(enc._columns.src_k8s) <= 3


def test_trace_id_reused_across_reports_of_one_flow() -> None:
    first = tcp_report(1)
    later = dataclasses.replace(first, span_id=b"\x01" * 8, end_ns=first.end_ns + 10**9,
                                end_reason=EndReason.END_OF_FLOW)  # fmt: skip
    a, b = spans_of(SpanEncoder(RESOURCE).encode([first, later]))
    assert a.trace_id == b.trace_id == first.trace_id
    assert a.span_id != b.span_id
    assert a.start_time_unix_nano == b.start_time_unix_nano


def test_json_encoding() -> None:
    reports = _variants()[:6]
    body = json.loads(encode_json(reports, RESOURCE))
    rs = body["resourceSpans"][0]
    assert {a["key"]: a["value"]["stringValue"] for a in rs["resource"]["attributes"]} == RESOURCE
    scope = rs["scopeSpans"][0]
    assert scope["scope"] == {"name": "mermin", "version": mermin.__version__}
    for span, r in zip(scope["spans"], reports, strict=True):
        assert span["traceId"] == r.trace_id.hex()  # OTLP/JSON: hex, not base64
        assert span["spanId"] == r.span_id.hex()
        assert span["kind"] == int(r.kind)
        assert int(span["startTimeUnixNano"]) == r.start_ns
        assert int(span["endTimeUnixNano"]) == r.end_ns
        attrs = {a["key"]: a["value"] for a in span["attributes"]}
        for k, v in r.attributes().items():
            if isinstance(v, str):
                assert attrs[k] == {"stringValue": v}
            elif isinstance(v, int):
                assert attrs[k] == {"intValue": str(v)}
            else:
                assert attrs[k] == {"arrayValue": {"values": [{"stringValue": x} for x in v]}}


def test_unusual_field_types_fall_back_to_the_reference_path() -> None:
    from types import MappingProxyType

    r = tcp_report(5)
    odd = dataclasses.replace(r, src_k8s=MappingProxyType(dict(r.src_k8s)))  # type: ignore[arg-type]
    assert SpanEncoder(RESOURCE).encode([odd]) == official_request([r], RESOURCE)
