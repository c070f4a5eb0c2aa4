"""FlowReport batches -> OTLP `ExportTraceServiceRequest` bytes. Pure: no I/O, no clock.

A hand encoder of the protobuf wire format, field for field the same bytes the official
generated messages (`opentelemetry.proto.*_pb2`) produce for the same span: tests decode our
output with those messages and compare both the decoded values and the re-serialized bytes.
It exists because filling the official messages costs ~100 µs per flow span (50 attributes)
while this costs under 10 (docs/bench/otlp.md).

Wire layout (field numbers from opentelemetry/proto/trace/v1/trace.proto):

    ExportTraceServiceRequest { 1: ResourceSpans { 1: Resource { 1: KeyValue* }
                                                   2: ScopeSpans { 1: InstrumentationScope
                                                                   2: Span* } } }
    Span { 1: trace_id  2: span_id  5: name  6: kind  7: start (fixed64)  8: end (fixed64)
           9: KeyValue* }
    KeyValue { 1: key  2: AnyValue { 1: string | 3: int (varint int64) | 5: ArrayValue } }

The attribute section mirrors `FlowReport.attributes()` key for key and in the same order (so
the bytes match the official messages built from `attributes()`); the test suite checks the two
agree on reports exercising every branch. Repeating values are cached as finished byte strings:
the span name + kind header, string values per key (bounded caches), whole Kubernetes metadata
dicts of an endpoint and policy lists.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mermin import __version__
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

_SMALL = [bytes((i,)) for i in range(128)]
_TWO = [bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(128, 1 << 14)]
_CACHE_LIMIT = 16384  # entries per value cache; cleared (not evicted one by one) when full
_FIXED2 = struct.Struct("<BQBQ").pack


def varint(v: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negative int64 as two's complement)."""
    if v < 0x4000:
        if v >= 0x80:
            return _TWO[v - 128]
        if v >= 0:
            return _SMALL[v]
        v += 1 << 64
    if v < 0x200000:
        return bytes(((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, v >> 14))
    if v < 0x10000000:
        return bytes(
            ((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, ((v >> 14) & 0x7F) | 0x80, v >> 21)
        )
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, varint length, payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def encode_any_value(value: Any) -> bytes:
    """AnyValue for a string, int (bool as bool), float, bytes or list of those."""
    if isinstance(value, str):
        return _ld(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _ld(0x3A, value)
    if isinstance(value, list | tuple):
        return _ld(0x2A, b"".join(_ld(0x0A, encode_any_value(x)) for x in value))
    raise TypeError(f"unsupported attribute value type {type(value).__name__}")


def encode_key_value(key: str, value: Any) -> bytes:
    """A KeyValue message (without the enclosing field tag)."""
    return _ld(0x0A, key.encode()) + _ld(0x12, encode_any_value(value))


def _attr(key: str, value: Any) -> bytes:
    """A KeyValue as field 9 (attributes) of a Span, tag included."""
    return _ld(0x4A, encode_key_value(key, value))


class _IntKey:
    """Finished prefixes of an int attribute, one per varint length (1..10)."""

    __slots__ = ("prefixes",)

    def __init__(self, key: str) -> None:
        kb = _ld(0x0A, key.encode())
        self.prefixes = [b""] + [
            b"\x4a" + varint(len(kb) + 3 + n) + kb + b"\x12" + bytes((1 + n,)) + b"\x18"
            for n in range(1, 11)
        ]

    def __call__(self, v: int) -> bytes:
        vb = varint(v)
        return self.prefixes[len(vb)] + vb


class _StrKey:
    """A string attribute with a bounded cache of finished encodings per value."""

    __slots__ = ("cache", "key", "limit", "prefixes")

    def __init__(self, key: str, limit: int = _CACHE_LIMIT) -> None:
        self.key = key
        self.cache: dict[str, bytes] = {}
        self.limit = limit
        kb = _ld(0x0A, key.encode())
        # prefixes[n]: everything before a value of n bytes, while every length fits one byte
        self.prefixes = [
            bytes((0x4A, len(kb) + 4 + n)) + kb + bytes((0x12, n + 2, 0x0A, n))
            for n in range(max(0, 124 - len(kb)))
        ]

    def __call__(self, v: str) -> bytes:
        c = self.cache.get(v)
        if c is None:
            vb = v.encode()
            c = self.prefixes[len(vb)] + vb if len(vb) < len(self.prefixes) else _attr(self.key, v)
            if self.limit:
                if len(self.cache) >= self.limit:
                    self.cache.clear()
                self.cache[v] = c
        return c


def _flags(prefix: str, bits: int) -> bytes:
    return _attr(prefix + "bits", bits) + _attr(prefix + "tags", names.tcp_flag_tags(bits))


def _dscp(prefix: str, dscp: int) -> bytes:
    return _attr(prefix + "id", dscp) + _attr(prefix + "name", names.dscp_name(dscp))


def _ecn(prefix: str, ecn: int) -> bytes:
    return _attr(prefix + "id", ecn) + _attr(prefix + "name", names.ecn_name(ecn))


def _icmp(prefix: str, v: tuple[bool, int, int]) -> bytes:
    v6, itype, code = v
    return (
        _attr(prefix + "type.id", itype)
        + _attr(prefix + "type.name", names.icmp_type_name(itype, v6))
        + _attr(prefix + "code.id", code)
        + _attr(prefix + "code.name", names.icmp_code_name(itype, code, v6))
    )


def _keys(*names_: str, kind: type) -> dict[str, Any]:
    return {n: kind(n) for n in names_}


class SpanEncoder:
    """Encodes FlowReports as OTLP spans under one resource and scope.

    Keeps caches between calls, so one instance per exporter worker (not thread-safe: the
    exporter encodes on its single worker thread).
    """

    def __init__(
        self,
        resource: Mapping[str, Any],
        scope_name: str = SCOPE_NAME,
        scope_version: str = __version__,
    ) -> None:
        self.resource = dict(resource)
        res = b"".join(_ld(0x0A, encode_key_value(k, v)) for k, v in self.resource.items())
        self._resource_field = _ld(0x0A, res)  # ResourceSpans.resource
        scope = _ld(0x0A, scope_name.encode()) + (
            _ld(0x12, scope_version.encode()) if scope_version else b""
        )
        self._scope_field = _ld(0x0A, scope)  # ScopeSpans.scope
        self._heads: dict[tuple[int, int, int], bytes] = {}
        self._k8s: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
        self._lists: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self._misc: dict[tuple[str, Any], bytes] = {}
        s = self._s = _keys(
            "flow.community_id", "flow.direction", "flow.end_reason", "network.type",
            "network.transport", "source.address", "destination.address",
            "network.interface.name", "flow.connection.state", "tunnel.type",
            "tunnel.source.address", "tunnel.destination.address", "tunnel.network.type",
            "tunnel.network.transport", "process.executable.name", kind=_StrKey,
        )  # fmt: skip
        s["flow.community_id"].limit = 0  # unique per flow: caching would only churn
        self._i = _keys(
            "source.port", "destination.port", "flow.bytes.delta", "flow.bytes.total",
            "flow.packets.delta", "flow.packets.total", "flow.reverse.bytes.delta",
            "flow.reverse.bytes.total", "flow.reverse.packets.delta",
            "flow.reverse.packets.total", "network.interface.index", "network.vlan.id",
            "flow.tcp.handshake.latency", "flow.tcp.retransmits",
            "flow.reverse.tcp.retransmits", "tunnel.id", "tunnel.source.port",
            "tunnel.destination.port", "process.pid", kind=_IntKey,
        )  # fmt: skip

    # -- request framing -------------------------------------------------------------------

    def encode(self, reports: Iterable[FlowReport]) -> bytes:
        """One ExportTraceServiceRequest holding every report of the batch."""
        span = self.encode_span
        parts: list[bytes] = [self._scope_field]
        append = parts.append
        for r in reports:
            b = span(r)
            append(b"\x12" + varint(len(b)))
            append(b)
        scope_spans = b"".join(parts)
        rs = self._resource_field + b"\x12" + varint(len(scope_spans)) + scope_spans
        return b"\x0a" + varint(len(rs)) + rs

    def encode_span(self, r: FlowReport) -> bytes:
        """One Span message (without its enclosing field tag)."""
        head = self._heads.get((r.ip_version, r.protocol, r.kind))
        if head is None:
            head = _ld(0x2A, r.name.encode()) + b"\x30" + varint(int(r.kind))
            self._heads[(r.ip_version, r.protocol, r.kind)] = head
        parts = [
            b"\x0a\x10",
            r.trace_id,
            b"\x12\x08",
            r.span_id,
            head,
            _FIXED2(0x39, r.start_ns, 0x41, r.end_ns),
        ]
        self._attributes(r, parts)
        return b"".join(parts)

    # -- attributes, in FlowReport.attributes() order ------------------------------------------

    def _attributes(self, r: FlowReport, p: list[bytes]) -> None:
        s, i, a = self._s, self._i, p.append
        a(s["flow.community_id"](r.community_id))
        a(s["flow.direction"](r.direction))
        a(s["flow.end_reason"](r.end_reason))
        a(s["network.type"](r.network_type))
        a(s["network.transport"](r.transport))
        a(s["source.address"](r.src_addr))
        a(s["destination.address"](r.dst_addr))
        if r.src_port is not None:
            a(i["source.port"](r.src_port))
        if r.dst_port is not None:
            a(i["destination.port"](r.dst_port))
        a(i["flow.bytes.delta"](r.bytes_delta))
        a(i["flow.bytes.total"](r.bytes_total))
        a(i["flow.packets.delta"](r.packets_delta))
        a(i["flow.packets.total"](r.packets_total))
        a(i["flow.reverse.bytes.delta"](r.rev_bytes_delta))
        a(i["flow.reverse.bytes.total"](r.rev_bytes_total))
        a(i["flow.reverse.packets.delta"](r.rev_packets_delta))
        a(i["flow.reverse.packets.total"](r.rev_packets_total))
        if r.iface_name is not None:
            a(s["network.interface.name"](r.iface_name))
        if r.iface_index is not None:
            a(i["network.interface.index"](r.iface_index))
        if r.vlan_id:
            a(i["network.vlan.id"](r.vlan_id))
        if r.tcp_flags is not None or r.rev_tcp_flags is not None or r.tcp_state is not None:
            self._tcp(r, a)
        if r.handshake_latency_ns is not None:
            a(i["flow.tcp.handshake.latency"](r.handshake_latency_ns))
        if r.retransmits is not None:
            a(i["flow.tcp.retransmits"](r.retransmits))
        if r.rev_retransmits is not None:
            a(i["flow.reverse.tcp.retransmits"](r.rev_retransmits))
        self._ip(r, a)
        if r.icmp_type is not None or r.rev_icmp_type is not None:
            self._icmp(r, a)
        if r.spi is not None or r.rev_spi is not None or r.tunnel_type is not None:
            self._tunnel(r, a)
        if r.src_k8s:
            a(self._k8s_block("source.k8s.", r.src_k8s))
        if r.dst_k8s:
            a(self._k8s_block("destination.k8s.", r.dst_k8s))
        if r.policies_ingress:
            a(self._list("network.policies.ingress", r.policies_ingress))
        if r.policies_egress:
            a(self._list("network.policies.egress", r.policies_egress))
        if r.process_pid is not None:
            a(i["process.pid"](r.process_pid))
        if r.process_name is not None:
            a(s["process.executable.name"](r.process_name))

    def _cached(self, key: str, value: Any, build: Callable[[str, Any], bytes]) -> bytes:
        """`build(key, value)` for a low-cardinality attribute group, cached by (key, value)."""
        k = (key, value)
        c = self._misc.get(k)
        if c is None:
            if len(self._misc) >= _CACHE_LIMIT:
                self._misc.clear()
            c = self._misc[k] = build(key, value)
        return c

    def _tcp(self, r: FlowReport, a: Any) -> None:
        c = self._cached
        if r.tcp_flags is not None:
            a(c("flow.tcp.flags.", r.tcp_flags, _flags))
        if r.rev_tcp_flags is not None:
            a(c("flow.reverse.tcp.flags.", r.rev_tcp_flags, _flags))
        if r.tcp_state is not None:
            a(self._s["flow.connection.state"](r.tcp_state))

    def _ip(self, r: FlowReport, a: Any) -> None:
        c = self._cached
        if r.dscp is not None:
            a(c("flow.ip.dscp.", r.dscp, _dscp))
        if r.ecn is not None:
            a(c("flow.ip.ecn.", r.ecn, _ecn))
        if r.ttl is not None:
            a(c("flow.ip.ttl", r.ttl, _attr))
        if r.flow_label is not None and r.ip_version == 6:
            a(_attr("flow.ip.flow_label", r.flow_label))
        if r.rev_dscp is not None:
            a(c("flow.reverse.ip.dscp.", r.rev_dscp, _dscp))
        if r.rev_ecn is not None:
            a(c("flow.reverse.ip.ecn.", r.rev_ecn, _ecn))
        if r.rev_ttl is not None:
            a(c("flow.reverse.ip.ttl", r.rev_ttl, _attr))
        if r.rev_flow_label is not None and r.ip_version == 6:
            a(_attr("flow.reverse.ip.flow_label", r.rev_flow_label))

    def _icmp(self, r: FlowReport, a: Any) -> None:
        c = self._cached
        v6 = r.ip_version == 6
        if r.icmp_type is not None:
            a(c("flow.icmp.", (v6, r.icmp_type, r.icmp_code or 0), _icmp))
        if r.rev_icmp_type is not None:
            a(c("flow.reverse.icmp.", (v6, r.rev_icmp_type, r.rev_icmp_code or 0), _icmp))

    def _tunnel(self, r: FlowReport, a: Any) -> None:
        if r.spi is not None or r.rev_spi is not None:
            if r.protocol == 50:
                spi_key = "flow.ipsec.esp.spi"
            elif r.protocol == 51:
                spi_key = "flow.ipsec.ah.spi"
            else:
                spi_key = "flow.wireguard.receiver.index"
            if r.spi is not None:
                a(_attr(spi_key, r.spi))
            if r.rev_spi is not None:
                a(_attr(spi_key.replace("flow.", "flow.reverse.", 1), r.rev_spi))
        if r.tunnel_type is None:
            return
        s, i = self._s, self._i
        a(s["tunnel.type"](r.tunnel_type))
        if r.tunnel_id is not None:
            a(i["tunnel.id"](r.tunnel_id))
        if r.tunnel_src_addr is not None:
            a(s["tunnel.source.address"](r.tunnel_src_addr))
        if r.tunnel_dst_addr is not None:
            a(s["tunnel.destination.address"](r.tunnel_dst_addr))
        if r.tunnel_src_port is not None:
            a(i["tunnel.source.port"](r.tunnel_src_port))
        if r.tunnel_dst_port is not None:
            a(i["tunnel.destination.port"](r.tunnel_dst_port))
        if r.tunnel_ip_version is not None:
            a(s["tunnel.network.type"]("ipv6" if r.tunnel_ip_version == 6 else "ipv4"))
        if r.tunnel_protocol is not None:
            a(s["tunnel.network.transport"](names.transport_name(r.tunnel_protocol)))

    def _k8s_block(self, prefix: str, meta: Mapping[str, str]) -> bytes:
        """All `<prefix><key>` attributes of one endpoint, cached by content."""
        k = (prefix, tuple(meta.items()))
        c = self._k8s.get(k)
        if c is None:
            if len(self._k8s) >= _CACHE_LIMIT:
                self._k8s.clear()
            c = self._k8s[k] = b"".join(_attr(prefix + key, v) for key, v in meta.items())
        return c

    def _list(self, key: str, values: Sequence[str]) -> bytes:
        k = (key, tuple(values))
        c = self._lists.get(k)
        if c is None:
            if len(self._lists) >= _CACHE_LIMIT:
                self._lists.clear()
            c = self._lists[k] = _attr(key, list(values))
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
