"""The stdout exporter: JSON lines with the SCHEMA keys, readable text, closed pipes."""

from __future__ import annotations

import contextlib
import io
import json
import os

from tests.export.samples import flow_reports, tcp_report
from tests.export.test_encode import _variants

from mermin.export.stdout import StdoutExporter, format_text


def test_json_lines_have_schema_keys_and_envelope() -> None:
    out = io.StringIO()
    ex = StdoutExporter("json", stream=out)
    reports = _variants()
    ex.export(reports)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(reports)
    for line, r in zip(lines, reports, strict=True):
        obj = json.loads(line)
        envelope = {
            "name": r.name,
            "kind": r.kind.name,
            "trace_id": r.trace_id.hex(),
            "span_id": r.span_id.hex(),
            "start_time_unix_nano": r.start_ns,
            "end_time_unix_nano": r.end_ns,
        }
        assert obj == {**envelope, **r.attributes()}
    assert ex.stats.exported == len(reports)


def test_text_block_is_readable() -> None:
    r = tcp_report(3)
    text = format_text(r)
    lines = text.splitlines()
    assert 4 <= len(lines) <= 6
    assert lines[0].startswith("flow_ipv4_tcp CLIENT active_timeout forward ")
    ns, pod = r.src_k8s["namespace.name"], r.src_k8s["pod.name"]
    assert f"{r.src_addr}:{r.src_port} ({ns}/{pod}) -> {r.dst_addr}:{r.dst_port}" in lines[1]
    assert "on eth0#2" in lines[1]
    assert f"fwd {r.packets_delta} pkts {r.bytes_delta} B" in lines[2]
    assert "tcp established flags syn,psh,ack | syn,ack" in text
    assert r.community_id in text and r.trace_id.hex() in text
    out = io.StringIO()
    StdoutExporter("text", stream=out).export(flow_reports(20))
    assert out.getvalue().count("\n  community_id ") == 20


def test_closed_pipe_is_counted_not_raised() -> None:
    rfd, wfd = os.pipe()
    os.close(rfd)  # the reader went away (`mermin run | head -1`)
    stream = os.fdopen(wfd, "w")
    ex = StdoutExporter("json", stream=stream)
    ex.export(flow_reports(3))
    ex.export(flow_reports(2))
    ex.shutdown(1)
    assert ex.stats.exported == 0
    assert ex.stats.dropped["closed_pipe"] == 5
    assert "closed" in (ex.stats.last_error or "")
    with contextlib.suppress(BrokenPipeError):
        stream.close()
