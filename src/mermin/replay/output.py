"""Printing reports for `mermin replay --format text|json`.

Uses the stdout exporter's formatting when `mermin.export.stdout` provides it, so replay and
the agent print identically; otherwise the same layout is produced here (SCHEMA.md "Stdout").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from mermin.flows.record import FlowReport

__all__ = ["formatter", "report_dict", "report_json", "report_text"]


def report_dict(r: FlowReport) -> dict[str, object]:
    """The JSON object of one report: envelope keys, then the SCHEMA.md attributes."""
    out: dict[str, object] = {
        "name": r.name,
        "kind": r.kind.name,
        "trace_id": r.trace_id.hex(),
        "span_id": r.span_id.hex(),
        "start_time_unix_nano": r.start_ns,
        "end_time_unix_nano": r.end_ns,
    }
    out.update(r.attributes())
    return out


def report_json(r: FlowReport) -> str:
    return json.dumps(report_dict(r), separators=(",", ":"))


def _ts(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def report_text(r: FlowReport) -> str:
    """A readable block: a summary line, then one `key = value` line per attribute."""
    src = f"{r.src_addr}:{r.src_port}" if r.src_port is not None else r.src_addr
    dst = f"{r.dst_addr}:{r.dst_port}" if r.dst_port is not None else r.dst_addr
    lines = [
        f"{r.name} {r.kind.name} {src} -> {dst} {r.end_reason} "
        f"{_ts(r.start_ns)} .. {_ts(r.end_ns)} trace={r.trace_id.hex()} span={r.span_id.hex()}"
    ]
    for key, value in r.attributes().items():
        lines.append(f"  {key} = {','.join(value) if isinstance(value, list) else value}")
    return "\n".join(lines) + "\n"


def formatter(fmt: str) -> Callable[[FlowReport], str]:
    """One report -> its printed form (newline-terminated)."""
    try:  # the stdout exporter's formatting, when present
        from mermin.export import stdout as _stdout  # type: ignore[attr-defined]

        fn = getattr(_stdout, "format_report", None)
        if fn is not None:
            return lambda r: fn(r, fmt).rstrip("\n") + "\n"
    except ImportError:
        pass
    if fmt == "json":
        return lambda r: report_json(r) + "\n"
    return report_text


def printer(fmt: str, stream: TextIO) -> Callable[[list[FlowReport]], None]:
    """A sink that writes each batch of reports to `stream`."""
    fn = formatter(fmt)

    def sink(reports: list[FlowReport]) -> None:
        stream.write("".join(fn(r) for r in reports))

    return sink
