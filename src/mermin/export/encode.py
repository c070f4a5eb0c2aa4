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
from collections.abc import Iterable, Mapping, Sequence
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
    if v < 0x800000000:
        return bytes(
            ((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, ((v >> 14) & 0x7F) | 0x80,
             ((v >> 21) & 0x7F) | 0x80, v >> 28)
        )  # fmt: skip
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


def _ip_dir(prefix: str, dscp: int | None, ecn: int | None, ttl: int | None, label: int | None
            ) -> bytes:  # fmt: skip
    out = b""
    if dscp is not None:
        out += _attr(prefix + "dscp.id", dscp) + _attr(prefix + "dscp.name", names.dscp_name(dscp))
    if ecn is not None:
        out += _attr(prefix + "ecn.id", ecn) + _attr(prefix + "ecn.name", names.ecn_name(ecn))
    if ttl is not None:
        out += _attr(prefix + "ttl", ttl)
    if label is not None:
        out += _attr(prefix + "flow_label", label)
    return out


def _icmp(prefix: str, v6: bool, itype: int, code: int) -> bytes:
    return (
        _attr(prefix + "type.id", itype)
        + _attr(prefix + "type.name", names.icmp_type_name(itype, v6))
        + _attr(prefix + "code.id", code)
        + _attr(prefix + "code.name", names.icmp_code_name(itype, code, v6))
    )


def _times(r: FlowReport) -> bytes:
    """Start and end fields when one is 0: proto3 leaves a zero scalar out."""
    return (struct.pack("<BQ", 0x39, r.start_ns) if r.start_ns else b"") + (
        struct.pack("<BQ", 0x41, r.end_ns) if r.end_ns else b""
    )


class _Bounded(dict):  # type: ignore[type-arg]
    """A dict used as a cache: cleared whole when it reaches its limit (cheap, bounded)."""

    __slots__ = ("limit",)

    def __init__(self, limit: int = _CACHE_LIMIT) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: bytes) -> bytes:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


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
        cache_limit: int = _CACHE_LIMIT,
    ) -> None:
        self.resource = dict(resource)
        res = b"".join(_ld(0x0A, encode_key_value(k, v)) for k, v in self.resource.items())
        self._resource_field = _ld(0x0A, res)  # ResourceSpans.resource
        scope = _ld(0x0A, scope_name.encode()) + (
            _ld(0x12, scope_version.encode()) if scope_version else b""
        )
        self._scope_field = _ld(0x0A, scope)  # ScopeSpans.scope
        self._heads = _Bounded(cache_limit)
        self._chunks = _Bounded(cache_limit)
        self._src_addr = _StrKey("source.address", cache_limit)
        self._dst_addr = _StrKey("destination.address", cache_limit)
        self._community = _StrKey("flow.community_id", limit=0).prefixes
        self._src_port: list[bytes | None] = [None] * 65536  # finished attribute per port
        self._dst_port: list[bytes | None] = [None] * 65536
        self._counters = [_IntKey(k).prefixes for k in _COUNTERS]
        self._ints = {
            k: _IntKey(k)
            for k in (
                "flow.tcp.handshake.latency", "flow.tcp.retransmits",
                "flow.reverse.tcp.retransmits", "network.vlan.id", "process.pid",
            )
        }  # fmt: skip

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
        cid = p[len(cid)] + cid if len(cid) < len(p) else _attr("flow.community_id", r.community_id)
        parts = [
            b"\x0a\x10",
            r.trace_id,
            b"\x12\x08",
            r.span_id,
            head,
            _FIXED2(0x39, r.start_ns, 0x41, r.end_ns) if r.start_ns and r.end_ns else _times(r),
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
            a(_attr("process.executable.name", r.process_name))
        return b"".join(parts)

    # -- cached chunks -------------------------------------------------------------------------

    @staticmethod
    def _port(table: list[bytes | None], key: str, port: int) -> bytes:
        c = _attr(key, port)
        if 0 <= port < len(table):
            table[port] = c
        return c

    @staticmethod
    def _head(r: FlowReport) -> tuple[bytes, tuple[bytes]]:
        """(name + kind fields, the four low-cardinality string attributes after the id)."""
        head = _ld(0x2A, r.name.encode()) + b"\x30" + varint(int(r.kind))
        common = (
            _attr("flow.direction", r.direction)
            + _attr("flow.end_reason", r.end_reason)
            + _attr("network.type", r.network_type)
            + _attr("network.transport", r.transport)
        )
        return head, (common,)

    def _iface(self, r: FlowReport) -> bytes:
        k = ("if", r.iface_name, r.iface_index, r.vlan_id)
        c = self._chunks.get(k)
        if c is None:
            c = b""
            if r.iface_name is not None:
                c += _attr("network.interface.name", r.iface_name)
            if r.iface_index is not None:
                c += _attr("network.interface.index", r.iface_index)
            if r.vlan_id:
                c += _attr("network.vlan.id", r.vlan_id)
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
            c += _attr("flow.connection.state", r.tcp_state)
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
                c += _attr(spi_key, r.spi)
            if r.rev_spi is not None:
                c += _attr(spi_key.replace("flow.", "flow.reverse.", 1), r.rev_spi)
        if r.tunnel_type is None:
            return c
        c += _attr("tunnel.type", r.tunnel_type)
        for key, value in (
            ("tunnel.id", r.tunnel_id),
            ("tunnel.source.address", r.tunnel_src_addr),
            ("tunnel.destination.address", r.tunnel_dst_addr),
            ("tunnel.source.port", r.tunnel_src_port),
            ("tunnel.destination.port", r.tunnel_dst_port),
        ):
            if value is not None:
                c += _attr(key, value)
        if r.tunnel_ip_version is not None:
            c += _attr("tunnel.network.type", "ipv6" if r.tunnel_ip_version == 6 else "ipv4")
        if r.tunnel_protocol is not None:
            c += _attr("tunnel.network.transport", names.transport_name(r.tunnel_protocol))
        return c

    def _k8s_block(self, prefix: str, meta: Mapping[str, str]) -> bytes:
        """All `<prefix><key>` attributes of one endpoint, cached by content."""
        k = (prefix, tuple(meta.items()))
        c = self._chunks.get(k)
        if c is None:
            c = self._chunks.put(k, b"".join(_attr(prefix + key, v) for key, v in meta.items()))
        return c

    def _list(self, key: str, values: Sequence[str]) -> bytes:
        k = (key, tuple(values))
        c = self._chunks.get(k)
        if c is None:
            c = self._chunks.put(k, _attr(key, list(values)))
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
