"""Exporter semantics without a network: queue bounds and drop-oldest, batching, retry
classification and backoff, shutdown deadlines, config, resource, build_exporters."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from pydantic import ValidationError
from tests.export.otlp_helpers import spans_of
from tests.export.samples import flow_reports

import mermin
from mermin.config.export import ExportConfig, OtlpConfig, RetryConfig
from mermin.export import OtlpExporter, StdoutExporter, TransportError, build_exporters
from mermin.export.fake import FakeTransport
from mermin.export.resource import build_resource
from mermin.export.retry import Backoff, grpc_retry_delay, parse_retry_after
from mermin.export.security import auth_headers, redact_endpoint

RES = {"service.name": "mermin"}


def cfg(**kw: object) -> OtlpConfig:
    base: dict[str, object] = {
        "max_batch_interval": 0.05,
        "retry": {"initial_backoff": 0.01, "max_backoff": 0.05},
    }
    base.update(kw)
    return OtlpConfig.model_validate(base)


def test_batches_by_size_and_interval_encode_once() -> None:
    t = FakeTransport()
    ex = OtlpExporter(cfg(max_batch_size=100, max_batch_interval=0.2), RES, transport=t)
    ex.start()
    reports = flow_reports(250)
    ex.export(reports)
    assert ex.force_flush(5)
    assert [len(spans_of(b)) for b in t.bodies] == [100, 100, 50]
    got = [s.span_id for b in t.bodies for s in spans_of(b)]
    assert got == [r.span_id for r in reports]  # order kept
    # a lone report waits at most max_batch_interval
    start = time.monotonic()
    ex.export(reports[:1])
    while len(t.bodies) < 4 and time.monotonic() - start < 3:
        time.sleep(0.01)
    assert len(t.bodies) == 4 and time.monotonic() - start < 1.0
    ex.shutdown(2)
    s = ex.stats
    assert s.exported == 251 and s.batches == 4 and s.dropped_total == 0 and t.closed


def test_queue_full_drops_oldest_counted_and_never_blocks() -> None:
    gate = threading.Event()

    def blocked(body: bytes, timeout: float) -> int:
        gate.wait(10)
        return 0

    t = FakeTransport(blocked)
    ex = OtlpExporter(
        cfg(max_queue_size=1000, max_batch_size=100, max_concurrent_exports=1,
            max_export_timeout=30, timeout=30),
        RES, transport=t,
    )  # fmt: skip
    ex.start()
    reports = flow_reports(20_000, seed=3)
    start = time.perf_counter()
    for i in range(0, len(reports), 500):
        ex.export(reports[i : i + 500])
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"export() blocked for {elapsed:.2f}s"
    assert ex.queued <= 1000
    # at most: 1 batch in flight + 1 batch waiting for a slot + the full queue
    assert ex.stats.dropped["queue_full"] >= 20_000 - 1000 - 200
    gate.set()
    assert ex.force_flush(10)
    ex.shutdown(2)
    s = ex.stats
    assert s.exported + s.dropped_total == 20_000
    sent = {sp.span_id for b in t.bodies for sp in spans_of(b)}
    newest = {r.span_id for r in reports[-1000:]}
    assert newest <= sent  # the oldest were dropped, the newest all made it


def test_retryable_then_success_counts_retries() -> None:
    fails = [TransportError("unavailable", retryable=True)] * 3

    def flaky(body: bytes, timeout: float) -> int:
        if fails:
            raise fails.pop()
        return 0

    t = FakeTransport(flaky)
    ex = OtlpExporter(cfg(), RES, transport=t)
    ex.start()
    ex.export(flow_reports(10))
    assert ex.force_flush(5)
    ex.shutdown(1)
    assert ex.stats.retries == 3 and ex.stats.requests == 4 and ex.stats.exported == 10


def test_non_retryable_is_dropped_without_retry() -> None:
    def bad(body: bytes, timeout: float) -> int:
        raise TransportError("INVALID_ARGUMENT", retryable=False)

    t = FakeTransport(bad)
    ex = OtlpExporter(cfg(), RES, transport=t)
    ex.start()
    ex.export(flow_reports(10))
    assert ex.force_flush(5)
    ex.shutdown(1)
    s = ex.stats
    assert t.attempts == 1 and s.retries == 0
    assert s.dropped["export_failed"] == 10 and s.failed_non_retryable == 10
    assert s.last_error == "INVALID_ARGUMENT"


def test_retries_stop_at_max_export_timeout() -> None:
    def down(body: bytes, timeout: float) -> int:
        raise TransportError("down", retryable=True)

    t = FakeTransport(down)
    ex = OtlpExporter(cfg(max_export_timeout=0.5), RES, transport=t)
    ex.start()
    start = time.monotonic()
    ex.export(flow_reports(5))
    assert ex.force_flush(5)
    assert 0.3 < time.monotonic() - start < 2.0
    ex.shutdown(1)
    assert ex.stats.failed_retries_exhausted == 5 and ex.stats.retries >= 3


def test_server_hint_replaces_backoff() -> None:
    hints = [TransportError("slow down", retryable=True, retry_after=0.4)]

    def hinted(body: bytes, timeout: float) -> int:
        if hints:
            raise hints.pop()
        return 0

    ex = OtlpExporter(cfg(), RES, transport=FakeTransport(hinted))
    ex.start()
    start = time.monotonic()
    ex.export(flow_reports(3))
    assert ex.force_flush(5)
    assert time.monotonic() - start >= 0.4
    ex.shutdown(1)
    assert ex.stats.exported == 3


def test_shutdown_respects_timeout_with_hung_receiver() -> None:
    def hung(body: bytes, timeout: float) -> int:
        t.cancelled.wait(timeout)  # the receiver never answers; only cancel() ends the wait
        raise TransportError("deadline", retryable=True, timeout=True)

    t = FakeTransport(hung)
    ex = OtlpExporter(cfg(timeout=30, max_export_timeout=60), RES, transport=t)
    ex.start()
    ex.export(flow_reports(3000))
    time.sleep(0.2)
    start = time.monotonic()
    ex.shutdown(0.5)
    assert time.monotonic() - start < 2.0
    s = ex.stats
    assert s.exported == 0 and s.dropped["shutdown"] == 3000 and t.cancelled.is_set()
    ex.export(flow_reports(5))  # after shutdown: counted, not queued
    assert s.dropped["shutdown"] == 3005


def test_shutdown_flushes_queue_first() -> None:
    t = FakeTransport()
    ex = OtlpExporter(cfg(max_batch_interval=60), RES, transport=t)
    ex.start()
    ex.export(flow_reports(10))
    ex.shutdown(5)
    assert ex.stats.exported == 10 and sum(len(spans_of(b)) for b in t.bodies) == 10


def test_partial_success_counted() -> None:
    ex = OtlpExporter(cfg(), RES, transport=FakeTransport(lambda b, t: 4))
    ex.start()
    ex.export(flow_reports(10))
    assert ex.force_flush(5)
    ex.shutdown(1)
    assert ex.stats.partial_rejected == 4 and ex.stats.exported == 6


def test_backoff_growth_jitter_and_hint() -> None:
    b = Backoff(RetryConfig(initial_backoff=1, max_backoff=5, multiplier=2, jitter=0.2))
    for attempt, base in ((0, 1), (1, 2), (2, 4), (3, 5), (10, 5)):
        for _ in range(50):
            assert base * 0.8 - 1e-9 <= b.delay(attempt) <= base * 1.2 + 1e-9
    assert b.delay(0, hint=7.5) == 7.5
    fixed = Backoff(RetryConfig(jitter=0.0))
    assert fixed.delay(1) == 2.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after(later) or 0) <= 31
    assert parse_retry_after(formatdate(time.time() - 30, usegmt=True)) == 0.0


def test_grpc_retry_info_decoding_matches_googleapis() -> None:
    status = status_pb2.Status(code=8, message="slow down")
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(2_500_000_000)
    status.details.add().Pack(error_details_pb2.DebugInfo(detail="x"))
    status.details.add().Pack(info)
    md = (("other", "x"), ("grpc-status-details-bin", status.SerializeToString()))
    assert grpc_retry_delay(md) == pytest.approx(2.5)
    assert grpc_retry_delay((("grpc-status-details-bin", b"\xff\xff"),)) is None
    assert grpc_retry_delay(None) is None


def test_retryable_grpc_codes_follow_the_spec() -> None:
    from mermin.export.grpc import RETRYABLE_GRPC
    from mermin.export.retry import RETRYABLE_HTTP

    assert {c.name for c in RETRYABLE_GRPC} == {
        "CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS",
    }  # fmt: skip
    assert grpc.StatusCode.RESOURCE_EXHAUSTED not in RETRYABLE_GRPC  # only with RetryInfo
    assert frozenset({429, 502, 503, 504}) == RETRYABLE_HTTP


def test_config_defaults_are_the_originals() -> None:
    c = OtlpConfig()
    assert (c.endpoint, c.protocol, c.timeout) == ("http://localhost:4317", "grpc", 10.0)
    assert (c.max_batch_size, c.max_batch_interval, c.max_queue_size) == (1024, 2.0, 32768)
    assert (c.max_concurrent_exports, c.max_export_timeout) == (4, 10.0)
    assert c.compression == "gzip" and c.retry.enabled
    assert ExportConfig().traces.stdout is None and ExportConfig().traces.otlp is None


def test_config_forms_and_rejections() -> None:
    e = ExportConfig.model_validate(
        {"traces": {"stdout": "json", "otlp": {"endpoint": "otel:4317"}}}
    )
    assert e.traces.stdout is not None and e.traces.stdout.format == "json"
    assert e.traces.otlp is not None and e.traces.otlp.endpoint == "http://otel:4317"
    legacy = ExportConfig.model_validate({"traces": {"stdout": {"format": "text_indent"}}})
    assert legacy.traces.stdout is not None and legacy.traces.stdout.format == "text"
    bad = [
        {"protocol": "http"},
        {"endpoint": "ftp://x"},
        {"endpoint": "http://x:99999"},
        {"max_queue_size": 0},
        {"auth": {"basic": {"user": "u", "pass": "p"}, "bearer": "t"}},
        {"tls": {"client_cert": "/c.pem"}},
        {"headers": {"bad name": "x"}},
        {"compresion": "gzip"},
    ]
    for b in bad:
        with pytest.raises(ValidationError):
            OtlpConfig.model_validate(b)


def test_secrets_hidden_in_config_dumps_and_errors() -> None:
    c = OtlpConfig.model_validate(
        {"auth": {"basic": {"user": "bob", "pass": "pw-s3cr3t"}}, "headers": {"x-a": "1"}}
    )
    for text in (repr(c), str(c), str(c.model_dump(mode="json", by_alias=True))):
        assert "pw-s3cr3t" not in text
    with pytest.raises(ValidationError) as err:
        OtlpConfig.model_validate(
            {"auth": {"bearer": "tok-s3cr3t", "basic": {"user": "u", "pass": "p"}}}
        )
    # pydantic's own str() shows the input; the config loader formats only the message
    assert all("tok-s3cr3t" not in str(e["msg"]) for e in err.value.errors())
    assert ("authorization", "Basic Ym9iOnB3LXMzY3IzdA==") in auth_headers(c)
    bearer = OtlpConfig.model_validate({"auth": {"bearer": "tok"}})
    assert ("authorization", "Bearer tok") in auth_headers(bearer)


def test_redact_endpoint() -> None:
    assert redact_endpoint("https://u:p@host:4318/v1/traces") == "https://host:4318/v1/traces"
    assert redact_endpoint("http://host:4317") == "http://host:4317"


def test_build_resource(tmp_path: pytest.TempPathFactory) -> None:
    mid = tmp_path / "machine-id"  # type: ignore[operator]
    mid.write_text("abc123\n")
    r = build_resource(
        {"k8s.cluster.uid": "uid-1", "k8s.cluster.name": ""},
        env={"K8S_NODE_NAME": "node-7"},
        machine_id_paths=(str(tmp_path / "missing"), str(mid)),  # type: ignore[operator]
    )
    assert r["service.name"] == "mermin" and r["service.version"] == mermin.__version__
    assert r["host.id"] == "abc123" and r["k8s.node.name"] == "node-7"
    assert r["k8s.cluster.uid"] == "uid-1" and "k8s.cluster.name" not in r
    assert r["host.name"]
    assert "host.id" not in build_resource(env={}, machine_id_paths=("/nonexistent",))


def test_build_exporters() -> None:
    none = build_exporters(ExportConfig(), RES)
    assert none == []
    both = build_exporters(
        ExportConfig.model_validate({"traces": {"stdout": "json", "otlp": {}}}), RES
    )
    assert [e.name for e in both] == ["stdout", "otlp"]
    assert isinstance(both[0], StdoutExporter) and isinstance(both[1], OtlpExporter)
    for e in both:
        e.shutdown(0.1)


def test_shutdown_does_not_wait_for_an_uncancellable_call() -> None:
    def stuck(body: bytes, timeout: float) -> int:
        time.sleep(5)  # ignores cancel(), like a blocked socket write
        return 0

    ex = OtlpExporter(cfg(timeout=30), RES, transport=FakeTransport(stuck))
    ex.start()
    ex.export(flow_reports(10))
    time.sleep(0.2)
    start = time.monotonic()
    ex.shutdown(0.3)
    assert time.monotonic() - start < 2.0  # 0.3 s + at most 1 s grace for the threads


def test_prometheus_metrics_follow_stats() -> None:
    from mermin.telemetry.metrics import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_drop = value("mermin_export_dropped_total", exporter="otlp", reason="queue_full")
    before_ok = value("mermin_export_flow_spans_total", exporter="otlp", status="ok")
    gate = threading.Event()
    t = FakeTransport(lambda b, timeout: gate.wait(5) and 0)
    ex = OtlpExporter(cfg(max_queue_size=100, max_batch_size=50, max_concurrent_exports=1),
                      RES, transport=t)  # fmt: skip
    ex.start()
    ex.export(flow_reports(1000))
    gate.set()
    assert ex.force_flush(5)
    ex.shutdown(1)
    dropped = value("mermin_export_dropped_total", exporter="otlp", reason="queue_full")
    assert dropped - before_drop == ex.stats.dropped["queue_full"] > 0
    ok = value("mermin_export_flow_spans_total", exporter="otlp", status="ok")
    assert ok - before_ok == ex.stats.exported
    assert value("mermin_export_queue_capacity", exporter="otlp") == 100


@pytest.mark.parametrize("protocol", ["grpc", "http_binary"])
def test_unreadable_tls_files_are_a_config_error(protocol: str) -> None:
    from mermin.errors import ConfigError
    from mermin.export import Exporter

    c = OtlpConfig.model_validate({
        "endpoint": "https://127.0.0.1:1", "protocol": protocol,
        "auth": {"bearer": "tok-s3cr3t"}, "tls": {"ca_cert": "/nonexistent/mo-ca.pem"},
    })  # fmt: skip
    with pytest.raises(ConfigError) as err:
        OtlpExporter(c, RES)
    assert "/nonexistent/mo-ca.pem" in str(err.value) and "tok-s3cr3t" not in str(err.value)
    assert err.value.exit_code == 2
    ok = OtlpExporter(OtlpConfig(protocol=protocol), RES)
    assert isinstance(ok, Exporter)
    ok.shutdown(0.1)


def test_public_api_is_exported() -> None:
    import mermin.export as pkg

    ours = {
        n for n in dir(pkg)
        if not n.startswith("_")
        and getattr(getattr(pkg, n), "__module__", "").startswith("mermin.export")
    }  # classes and functions of this package reachable from it
    assert sorted(pkg.__all__) == pkg.__all__
    assert ours <= set(pkg.__all__)
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
