"""Exporters: where flow reports go (OTLP over gRPC/HTTP, stdout).

    build_exporters(config.export, build_resource(extra)) -> [StdoutExporter?, OtlpExporter?]

Every exporter follows `Exporter`: `start()`, `export(reports)` (never blocks, never raises),
`shutdown(timeout)`, `stats`. See docs/export.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from mermin.config.export import ExportConfig
from mermin.export.base import Exporter, ExportStats, TransportError
from mermin.export.encode import SpanEncoder, encode_json
from mermin.export.otlp import OtlpExporter, Transport, make_transport
from mermin.export.resource import build_resource
from mermin.export.stdout import StdoutExporter

__all__ = [
    "ExportStats",
    "Exporter",
    "OtlpExporter",
    "SpanEncoder",
    "StdoutExporter",
    "Transport",
    "TransportError",
    "build_exporters",
    "build_resource",
    "encode_json",
    "make_transport",
]


def build_exporters(export_config: ExportConfig, resource: Mapping[str, str]) -> list[Exporter]:
    """The configured exporters, not yet started (stdout first, then OTLP)."""
    traces = export_config.traces
    out: list[Exporter] = []
    if traces.stdout is not None:
        out.append(StdoutExporter(traces.stdout.format))
    if traces.otlp is not None:
        out.append(OtlpExporter(traces.otlp, resource))
    return out
