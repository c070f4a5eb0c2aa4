"""Test helpers around the official OTLP messages: build the reference request from
FlowReport.attributes() and turn decoded KeyValues back into Python values with their types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

import mermin
from mermin.flows.record import FlowReport

__all__ = ["any_value", "attrs_of", "official_request", "spans_of"]


def _set(av: AnyValue, v: Any) -> None:
    if isinstance(v, str):
        av.string_value = v
    elif isinstance(v, bool):
        av.bool_value = v
    elif isinstance(v, int):
        av.int_value = v
    elif isinstance(v, list):
        av.array_value.SetInParent()
        for x in v:
            _set(av.array_value.values.add(), x)
    else:
        raise TypeError(type(v))


def official_request(reports: Iterable[FlowReport], resource: Mapping[str, Any]) -> bytes:
    """The request built with the official generated messages (the reference encoding)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in resource.items():
        kv = rs.resource.attributes.add()
        kv.key = k
        _set(kv.value, v)
    ss = rs.scope_spans.add()
    ss.scope.name = "mermin"
    ss.scope.version = mermin.__version__
    for r in reports:
        s = ss.spans.add()
        s.trace_id = r.trace_id
        s.span_id = r.span_id
        s.name = r.name
        s.kind = int(r.kind)
        s.start_time_unix_nano = r.start_ns
        s.end_time_unix_nano = r.end_ns
        for k, v in r.attributes().items():
            kv = s.attributes.add()
            kv.key = k
            _set(kv.value, v)
    return req.SerializeToString()


def any_value(av: AnyValue) -> Any:
    """Python value of an AnyValue; the oneof decides the type (str, int, list)."""
    which = av.WhichOneof("value")
    if which == "string_value":
        return av.string_value
    if which == "int_value":
        return av.int_value
    if which == "bool_value":
        return av.bool_value
    if which == "array_value":
        return [any_value(x) for x in av.array_value.values]
    raise AssertionError(f"unexpected AnyValue kind {which}")


def attrs_of(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        assert kv.key not in out, f"duplicate attribute {kv.key}"
        out[kv.key] = any_value(kv.value)
    return out


def spans_of(data: bytes | ExportTraceServiceRequest) -> list[Any]:
    """All spans of a request (bytes or parsed)."""
    if isinstance(data, bytes):
        req = ExportTraceServiceRequest()
        req.ParseFromString(data)
    else:
        req = data
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
