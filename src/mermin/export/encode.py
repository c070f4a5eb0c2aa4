"""FlowReport batches -> OTLP `ExportTraceServiceRequest` bytes. Pure: no I/O, no clock.

A hand encoder of the protobuf wire format, field for field the same bytes the official
generated messages (`opentelemetry.proto.*_pb2`) produce for the same span: tests decode our
output with those messages and compare both the decoded values and the re-serialized bytes.
It exists because filling the official messages costs ~75 µs per flow span (50 attributes)
here while this costs about 8-10 (docs/bench/otlp.md).

Two paths produce the same bytes: `SpanEncoder.encode` (a batch, column-wise, columns.py: the
one the exporter uses) and `encode_span` / `encode_slow` (one report at a time, the readable
reference). Both are tested against the official messages.

Wire layout (field numbers from opentelemetry/proto/trace/v1/trace.proto):

    ExportTraceServiceRequest { 1: ResourceSpans { 1: Resource { 1: KeyValue* }
                                                   2: ScopeSpans { 1: InstrumentationScope
                                                                   2: Span* } } }
    Span { 1: trace_id  2: span_id  5: name  6: kind  7: start (fixed64)  8: end (fixed64)
           9: KeyValue* }
    KeyValue { 1: key  2: AnyValue { 1: string | 3: int (varint int64) | 5: ArrayValue } }

The attribute section mirrors `FlowReport.attributes()` key for key and in the same order (so
the bytes match the official messages built from `attributes()`); the test suite checks the two
agree on reports exercising every branch. Repeating values are cached as finished byte strings
(bounded caches, cleared whole when full): the span name + kind header, direction/end reason/
network type/transport, addresses, ports, interface, TCP flags and state, IP header facts,
ICMP, each endpoint's Kubernetes metadata and policy lists.

OTLP/JSON (`encode_json`, protocol http_json) is built from `attributes()` with `json`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mermin import __version__
from mermin.export.columns import ColumnEncoder, _flags, _ip_dir
from mermin.export.wire import (
    CACHE_LIMIT,
    FIXED2,
    Bounded,
    IntKey,
    StrKey,
    attr,
    encode_any_value,
    encode_key_value,
    ld,
    varint,
)
from mermin.flows import names
from mermin.flows.record import FlowReport

__all__ = [
    "SCOPE_NAME",
    "SpanEncoder",
    "encode_any_value",
    "encode_json",
    "encode_key_value",
    "varint",
]

SCOPE_NAME = "mermin"

def _icmp(prefix: str, v6: bool, itype: int, code: int) -> bytes:
    return (
        attr(prefix + "type.id", itype)
        + attr(prefix + "type.name", names.icmp_type_name(itype, v6))
        + attr(prefix + "code.id", code)
        + attr(prefix + "code.name", names.icmp_code_name(itype, code, v6))
    )


def _times(r: FlowReport) -> bytes:
    """Start and end fields when one is 0: proto3 leaves a zero scalar out."""
    return (struct.pack("<BQ", 0x39, r.start_ns) if r.start_ns else b"") + (
        struct.pack("<BQ", 0x41, r.end_ns) if r.end_ns else b""
    )


_COUNTERS = (
    "flow.bytes.delta", "flow.bytes.total", "flow.packets.delta", "flow.packets.total",
    "flow.reverse.bytes.delta", "flow.reverse.bytes.total", "flow.reverse.packets.delta",
    "flow.reverse.packets.total",
)  # fmt: skip


class SpanEncoder:
    """Encodes FlowReports as OTLP spans under one resource and scope.

    Keeps caches between calls, so one instance per exporter worker (not thread-safe: the
    exporter encodes on its single worker thread). Attributes that travel together and take
    few distinct values (name/kind/direction/end reason, interface, TCP flags and state, IP
    header facts, ICMP, one endpoint's Kubernetes metadata) are cached as one finished chunk.
    """

    def __init__(
        self,
        resource: Mapping[str, Any],
        scope_name: str = SCOPE_NAME,
        scope_version: str = __version__,
        cache_limit: int = CACHE_LIMIT,
    ) -> None:
        self.resource = dict(resource)
        res = b"".join(ld(0x0A, encode_key_value(k, v)) for k, v in self.resource.items())
        self._resource_field = ld(0x0A, res)  # ResourceSpans.resource
        scope = ld(0x0A, scope_name.encode()) + (
            ld(0x12, scope_version.encode()) if scope_version else b""
        )
        self._scope_field = ld(0x0A, scope)  # ScopeSpans.scope
        self._columns = ColumnEncoder(cache_limit)
        self._heads = Bounded(cache_limit)
        self._chunks = Bounded(cache_limit)
        self._src_addr = StrKey("source.address", cache_limit)
        self._dst_addr = StrKey("destination.address", cache_limit)
        self._community = StrKey("flow.community_id", limit=0).prefixes
        self._src_port: list[bytes | None] = [None] * 65536  # finished attribute per port
        self._dst_port: list[bytes | None] = [None] * 65536
        self._counters = [IntKey(k).prefixes for k in _COUNTERS]
        self._ints = {
            k: IntKey(k)
            for k in (
                "flow.tcp.handshake.latency", "flow.tcp.retransmits",
                "flow.reverse.tcp.retransmits", "network.vlan.id", "process.pid",
            )
        }  # fmt: skip

    # -- request framing -------------------------------------------------------------------

    def encode(self, reports: Iterable[FlowReport]) -> bytes:
        """One ExportTraceServiceRequest holding every report of the batch (column-wise fast
        path, columns.py; the same bytes as `encode_span` per report)."""
        batch = reports if isinstance(reports, Sequence) else list(reports)
        try:
            spans = self._columns.encode(batch)
        except (TypeError, ValueError, AttributeError, IndexError, KeyError):
            # a field of an unexpected type (e.g. a Mapping that is not a dict): the
            # per-report path accepts anything attributes() accepts
            return self.encode_slow(batch)
        ss_len = len(self._scope_field) + sum(map(len, spans))
        ss_head = b"\x12" + varint(ss_len)
        rs_len = len(self._resource_field) + len(ss_head) + ss_len
        # one join, no intermediate copies of the whole request
        return b"".join(
            [b"\x0a", varint(rs_len), self._resource_field, ss_head, self._scope_field, *spans]
        )

    def encode_slow(self, reports: Iterable[FlowReport]) -> bytes:
        """The same request built one report at a time with `encode_span` (the reference)."""
        parts: list[bytes] = [self._scope_field]
        for r in reports:
            b = self.encode_span(r)
            parts.append(b"\x12" + varint(len(b)))
            parts.append(b)
        scope_spans = b"".join(parts)
        rs = self._resource_field + b"\x12" + varint(len(scope_spans)) + scope_spans
        return b"\x0a" + varint(len(rs)) + rs

    def encode_span(self, r: FlowReport) -> bytes:
        """One Span message (without its enclosing field tag); attributes in the order of
        FlowReport.attributes()."""
        V = varint
        hk = (r.ip_version, r.protocol, r.kind, r.direction, r.end_reason)
        hc = self._heads.get(hk)
        if hc is None:
            hc = self._heads.put(hk, self._head(r))
        head, common = hc[0], hc[1]
        cid = r.community_id.encode()
        p = self._community
        cid = p[len(cid)] + cid if len(cid) < len(p) else attr("flow.community_id", r.community_id)
        parts = [
            b"\x0a\x10",
            r.trace_id,
            b"\x12\x08",
            r.span_id,
            head,
            FIXED2(0x39, r.start_ns, 0x41, r.end_ns) if r.start_ns and r.end_ns else _times(r),
            cid,
            common[0],  # direction, end reason, network type, transport
            self._src_addr(r.src_addr),
            self._dst_addr(r.dst_addr),
        ]
        a = parts.append
        port = r.src_port
        if port is not None:
            a(self._src_port[port] or self._port(self._src_port, "source.port", port))
        port = r.dst_port
        if port is not None:
            a(self._dst_port[port] or self._port(self._dst_port, "destination.port", port))
        c = self._counters
        for pre, v in zip(
            c,
            (r.bytes_delta, r.bytes_total, r.packets_delta, r.packets_total, r.rev_bytes_delta,
             r.rev_bytes_total, r.rev_packets_delta, r.rev_packets_total),
            strict=True,
        ):  # fmt: skip
            vb = V(v)
            a(pre[len(vb)])
            a(vb)
        chunks = self._chunks
        if r.iface_name is not None or r.iface_index is not None or r.vlan_id:
            a(self._iface(r))
        if r.tcp_flags is not None or r.rev_tcp_flags is not None or r.tcp_state is not None:
            k = ("tcp", r.tcp_flags, r.rev_tcp_flags, r.tcp_state)
            a(chunks.get(k) or chunks.put(k, self._tcp(r)))
        ints = self._ints
        if r.handshake_latency_ns is not None:
            a(ints["flow.tcp.handshake.latency"](r.handshake_latency_ns))
        if r.retransmits is not None:
            a(ints["flow.tcp.retransmits"](r.retransmits))
        if r.rev_retransmits is not None:
            a(ints["flow.reverse.tcp.retransmits"](r.rev_retransmits))
        a(self._ip(r))
        if r.icmp_type is not None or r.rev_icmp_type is not None:
            k = ("icmp", r.ip_version, r.icmp_type, r.icmp_code, r.rev_icmp_type, r.rev_icmp_code)
            a(chunks.get(k) or chunks.put(k, self._icmp(r)))
        if r.spi is not None or r.rev_spi is not None or r.tunnel_type is not None:
            a(self._tunnel(r))
        if r.src_k8s:
            a(self._k8s_block("source.k8s.", r.src_k8s))
        if r.dst_k8s:
            a(self._k8s_block("destination.k8s.", r.dst_k8s))
        if r.policies_ingress:
            a(self._list("network.policies.ingress", r.policies_ingress))
        if r.policies_egress:
            a(self._list("network.policies.egress", r.policies_egress))
        if r.process_pid is not None:
            a(ints["process.pid"](r.process_pid))
        if r.process_name is not None:
            a(attr("process.executable.name", r.process_name))
        return b"".join(parts)

    # -- cached chunks -------------------------------------------------------------------------

    @staticmethod
    def _port(table: list[bytes | None], key: str, port: int) -> bytes:
        c = attr(key, port)
        if 0 <= port < len(table):
            table[port] = c
        return c

    @staticmethod
    def _head(r: FlowReport) -> tuple[bytes, tuple[bytes]]:
        """(name + kind fields, the four low-cardinality string attributes after the id)."""
        head = ld(0x2A, r.name.encode()) + b"\x30" + varint(int(r.kind))
        common = (
            attr("flow.direction", r.direction)
            + attr("flow.end_reason", r.end_reason)
            + attr("network.type", r.network_type)
            + attr("network.transport", r.transport)
        )
        return head, (common,)

    def _iface(self, r: FlowReport) -> bytes:
        k = ("if", r.iface_name, r.iface_index, r.vlan_id)
        c = self._chunks.get(k)
        if c is None:
            c = b""
            if r.iface_name is not None:
                c += attr("network.interface.name", r.iface_name)
            if r.iface_index is not None:
                c += attr("network.interface.index", r.iface_index)
            if r.vlan_id:
                c += attr("network.vlan.id", r.vlan_id)
            self._chunks.put(k, c)
        return c

    @staticmethod
    def _tcp(r: FlowReport) -> bytes:
        c = b""
        if r.tcp_flags is not None:
            c += _flags("flow.tcp.flags.", r.tcp_flags)
        if r.rev_tcp_flags is not None:
            c += _flags("flow.reverse.tcp.flags.", r.rev_tcp_flags)
        if r.tcp_state is not None:
            c += attr("flow.connection.state", r.tcp_state)
        return c

    def _ip(self, r: FlowReport) -> bytes:
        v6 = r.ip_version == 6
        fl = r.flow_label if v6 else None
        rfl = r.rev_flow_label if v6 else None
        k = (r.dscp, r.ecn, r.ttl, fl, r.rev_dscp, r.rev_ecn, r.rev_ttl, rfl)
        c = self._chunks.get(k)
        if c is None:
            c = _ip_dir("flow.ip.", r.dscp, r.ecn, r.ttl, fl) + _ip_dir(
                "flow.reverse.ip.", r.rev_dscp, r.rev_ecn, r.rev_ttl, rfl
            )
            if fl is None and rfl is None:  # flow labels are per flow: not worth caching
                self._chunks.put(k, c)
        return c

    @staticmethod
    def _icmp(r: FlowReport) -> bytes:
        v6 = r.ip_version == 6
        c = b""
        if r.icmp_type is not None:
            c += _icmp("flow.icmp.", v6, r.icmp_type, r.icmp_code or 0)
        if r.rev_icmp_type is not None:
            c += _icmp("flow.reverse.icmp.", v6, r.rev_icmp_type, r.rev_icmp_code or 0)
        return c

    @staticmethod
    def _tunnel(r: FlowReport) -> bytes:
        c = b""
        if r.spi is not None or r.rev_spi is not None:
            if r.protocol == 50:
                spi_key = "flow.ipsec.esp.spi"
            elif r.protocol == 51:
                spi_key = "flow.ipsec.ah.spi"
            else:
                spi_key = "flow.wireguard.receiver.index"
            if r.spi is not None:
                c += attr(spi_key, r.spi)
            if r.rev_spi is not None:
                c += attr(spi_key.replace("flow.", "flow.reverse.", 1), r.rev_spi)
        if r.tunnel_type is None:
            return c
        c += attr("tunnel.type", r.tunnel_type)
        for key, value in (
            ("tunnel.id", r.tunnel_id),
            ("tunnel.source.address", r.tunnel_src_addr),
            ("tunnel.destination.address", r.tunnel_dst_addr),
            ("tunnel.source.port", r.tunnel_src_port),
            ("tunnel.destination.port", r.tunnel_dst_port),
        ):
            if value is not None:
                c += attr(key, value)
        if r.tunnel_ip_version is not None:
            c += attr("tunnel.network.type", "ipv6" if r.tunnel_ip_version == 6 else "ipv4")
        if r.tunnel_protocol is not None:
            c += attr("tunnel.network.transport", names.transport_name(r.tunnel_protocol))
        return c

    def _k8s_block(self, prefix: str, meta: Mapping[str, str]) -> bytes:
        """All `<prefix><key>` attributes of one endpoint, cached by content."""
        k = (prefix, tuple(meta), tuple(meta.values()))  # flat tuples of strings: cheap hash
        c = self._chunks.get(k)
        if c is None:
            c = self._chunks.put(k, b"".join(attr(prefix + key, v) for key, v in meta.items()))
        return c

    def _list(self, key: str, values: Sequence[str]) -> bytes:
        k = (key, tuple(values))
        c = self._chunks.get(k)
        if c is None:
            c = self._chunks.put(k, attr(key, list(values)))
        return c


# -- OTLP/JSON (protocol http_json) -------------------------------------------------------------


def _json_value(v: Any) -> dict[str, Any]:
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}  # int64 as a decimal string, as proto3 JSON mapping says
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [_json_value(x) for x in v]}}
    raise TypeError(f"unsupported attribute value type {type(v).__name__}")


def _json_attrs(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _json_value(v)} for k, v in attrs.items()]


def encode_json(
    reports: Iterable[FlowReport],
    resource: Mapping[str, Any],
    scope_name: str = SCOPE_NAME,
    scope_version: str = __version__,
) -> bytes:
    """The same request in the OTLP/JSON encoding (hex trace/span ids, int64 as strings)."""
    spans = [
        {
            "traceId": r.trace_id.hex(),
            "spanId": r.span_id.hex(),
            "name": r.name,
            "kind": int(r.kind),
            "startTimeUnixNano": str(r.start_ns),
            "endTimeUnixNano": str(r.end_ns),
            "attributes": _json_attrs(r.attributes()),
        }
        for r in reports
    ]
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": _json_attrs(resource)},
                "scopeSpans": [
                    {"scope": {"name": scope_name, "version": scope_version}, "spans": spans}
                ],
            }
        ]
    }
    return json.dumps(body, separators=(",", ":")).encode()
