"""Print flow reports: `text` (a compact readable block each) or `json` (one object per line
with the SCHEMA.md attribute keys plus the span envelope).

Writes happen in the caller's thread, one write + flush per batch. A closed pipe (the reader
went away, `mermin run | head`) is not an error: the exporter counts what it could not print
and stops printing.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import IO, Literal

from mermin.export import metrics
from mermin.export.base import ExportStats
from mermin.flows import names
from mermin.flows.record import FlowReport

__all__ = ["StdoutExporter", "format_json", "format_text"]

log = logging.getLogger("mermin.export.stdout")


def format_json(r: FlowReport) -> str:
    """One JSON line: envelope keys then FlowReport.attributes()."""
    obj: dict[str, object] = {
        "name": r.name,
        "kind": r.kind.name,
        "trace_id": r.trace_id.hex(),
        "span_id": r.span_id.hex(),
        "start_time_unix_nano": r.start_ns,
        "end_time_unix_nano": r.end_ns,
    }
    obj.update(r.attributes())
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _when(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _endpoint(addr: str, port: int | None, k8s: dict[str, str]) -> str:
    text = f"[{addr}]" if ":" in addr and port is not None else addr
    if port is not None:
        text += f":{port}"
    who = k8s.get("pod.name") or k8s.get("service.name") or k8s.get("node.name")
    if who:
        ns = k8s.get("namespace.name")
        text += f" ({ns}/{who})" if ns else f" ({who})"
    return text


def _duration(ns: int) -> str:
    s = max(0, ns) / 1e9
    return f"{s * 1000:.1f}ms" if s < 1 else f"{s:.3f}s"


def format_text(r: FlowReport) -> str:
    """A few lines: what and when, who talked to whom, how much, protocol details."""
    lines = [
        f"{r.name} {r.kind.name} {r.end_reason} {r.direction} "
        f"{_when(r.start_ns)} +{_duration(r.end_ns - r.start_ns)}",
        f"  {_endpoint(r.src_addr, r.src_port, r.src_k8s)} -> "
        f"{_endpoint(r.dst_addr, r.dst_port, r.dst_k8s)}"
        + (f"  on {r.iface_name or '?'}#{r.iface_index}" if r.iface_index is not None else ""),
        f"  fwd {r.packets_delta} pkts {r.bytes_delta} B (total {r.packets_total} pkts "
        f"{r.bytes_total} B)  rev {r.rev_packets_delta} pkts {r.rev_bytes_delta} B "
        f"(total {r.rev_packets_total} pkts {r.rev_bytes_total} B)",
    ]
    detail = []
    if r.tcp_state is not None or r.tcp_flags is not None:
        fwd = ",".join(names.tcp_flag_tags(r.tcp_flags or 0)) or "-"
        rev = ",".join(names.tcp_flag_tags(r.rev_tcp_flags or 0)) or "-"
        detail.append(f"tcp {r.tcp_state or '?'} flags {fwd} | {rev}")
        if r.handshake_latency_ns is not None:
            detail.append(f"handshake {_duration(r.handshake_latency_ns)}")
        if r.retransmits is not None or r.rev_retransmits is not None:
            detail.append(f"retrans {r.retransmits or 0}/{r.rev_retransmits or 0}")
    if r.icmp_type is not None:
        v6 = r.ip_version == 6
        detail.append(f"icmp {names.icmp_type_name(r.icmp_type, v6)}/{r.icmp_code or 0}")
    if r.tunnel_type is not None:
        detail.append(
            f"tunnel {r.tunnel_type} {r.tunnel_src_addr or '?'} -> {r.tunnel_dst_addr or '?'}"
            + (f" id {r.tunnel_id}" if r.tunnel_id is not None else "")
        )
    if r.vlan_id:
        detail.append(f"vlan {r.vlan_id}")
    if r.process_name or r.process_pid is not None:
        detail.append(f"process {r.process_name or '?'}[{r.process_pid}]")
    if detail:
        lines.append("  " + "  ".join(detail))
    lines.append(
        f"  community_id {r.community_id}  trace {r.trace_id.hex()}  span {r.span_id.hex()}"
    )
    return "\n".join(lines) + "\n"


class StdoutExporter:
    """Prints reports to `stream` (default: sys.stdout)."""

    name = "stdout"

    def __init__(self, format: Literal["text", "json"] = "text", stream: IO[str] | None = None
                 ) -> None:  # fmt: skip
        if format not in ("text", "json"):
            raise ValueError(f"stdout format must be 'text' or 'json', not {format!r}")
        self.format = format
        self._stream = stream
        self._lock = threading.Lock()
        self._closed = False
        self._stats = ExportStats()
        self._stats.dropped["closed_pipe"] = 0

    @property
    def stats(self) -> ExportStats:
        return self._stats

    def start(self) -> None:
        """Nothing to start: printing happens in `export`."""

    def export(self, reports: Sequence[FlowReport]) -> None:
        if not reports:
            return
        with self._lock:
            if self._closed:
                self._stats.drop("closed_pipe", len(reports))
                metrics.dropped(self.name, "closed_pipe", len(reports))
                return
            stream = self._stream or sys.stdout
            if self.format == "json":
                text = "\n".join(map(format_json, reports)) + "\n"
            else:
                text = "\n".join(map(format_text, reports))
            try:
                stream.write(text)
                stream.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError) and (
                    exc.errno not in (errno.EPIPE, errno.EBADF)
                ):  # fmt: skip
                    self._stats.last_error = f"write failed: {exc}"
                self._close_pipe(stream, exc)
                self._stats.drop("closed_pipe", len(reports))
                metrics.dropped(self.name, "closed_pipe", len(reports))
                return
            with self._stats.lock:
                self._stats.exported += len(reports)
                self._stats.batches += 1
        metrics.exported(self.name, len(reports), 0, len(reports), 0.0)

    def _close_pipe(self, stream: IO[str], exc: BaseException) -> None:
        self._closed = True
        self._stats.last_error = self._stats.last_error or f"output closed: {exc}"
        log.warning("stdout exporter: output closed (%s); no more reports will be printed", exc)
        if stream is sys.stdout:
            # keep Python's exit-time flush of sys.stdout from raising on the dead pipe
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass

    def shutdown(self, timeout: float) -> None:
        """Flush the stream; nothing is queued."""
        with self._lock:
            if self._closed:
                return
            try:
                (self._stream or sys.stdout).flush()
            except (OSError, ValueError):
                self._closed = True
