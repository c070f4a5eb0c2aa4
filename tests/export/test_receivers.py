"""End to end against real OTLP receivers (grpcio TraceService, HTTP protobuf/JSON) on
127.0.0.1: content, auth, TLS/mTLS, gzip, and faults (receiver down, outage, retry hints,
slow receiver, partial success). Outage length: MERMIN_TEST_OUTAGE_S (default 3 s; the issue's
30 s scenario is `MERMIN_TEST_OUTAGE_S=30`)."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tests.export.certs import Pki, make_pki
from tests.export.otlp_helpers import attrs_of
from tests.export.receiver import GrpcReceiver, HttpReceiver, Reply, TcpRelay, free_port
from tests.export.samples import flow_reports, tcp_report
from tests.export.test_encode import _variants

import mermin
from mermin.config.export import OtlpConfig
from mermin.export import OtlpExporter, build_resource
from mermin.flows.record import EndReason

OUTAGE_S = float(os.environ.get("MERMIN_TEST_OUTAGE_S", "3"))
PROTOCOLS = ["grpc", "http_binary", "http_json"]


def receiver_for(protocol: str, **kw: object) -> GrpcReceiver | HttpReceiver:
    return GrpcReceiver(**kw) if protocol == "grpc" else HttpReceiver(**kw)  # type: ignore[arg-type]


def make(endpoint: str, protocol: str = "grpc", **kw: object) -> OtlpConfig:
    base: dict[str, object] = {
        "endpoint": endpoint,
        "protocol": protocol,
        "max_batch_interval": 0.05,
        "timeout": 2,
        "max_export_timeout": 5,
        "retry": {"initial_backoff": 0.05, "max_backoff": 0.3},
    }
    base.update(kw)
    return OtlpConfig.model_validate(base)


@pytest.fixture
def exporters() -> Iterator[list[OtlpExporter]]:
    """Exporters created by a test; shut down even when it fails."""
    made: list[OtlpExporter] = []
    yield made
    for ex in made:
        ex.shutdown(1)


def run(made: list[OtlpExporter], config: OtlpConfig, resource: dict[str, str] | None = None
        ) -> OtlpExporter:  # fmt: skip
    ex = OtlpExporter(config, resource or {"service.name": "mermin"})
    made.append(ex)
    ex.start()
    return ex


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(Path(tmp_path_factory.mktemp("mo-pki")))


# -- content ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_attribute_type_resource_scope(protocol: str, exporters: list) -> None:
    reports = _variants()
    first = tcp_report(99)
    later = dataclasses.replace(first, span_id=b"\x02" * 8, end_ns=first.end_ns + 5 * 10**9,
                                end_reason=EndReason.END_OF_FLOW, packets_delta=1)  # fmt: skip
    reports += [first, later]
    resource = build_resource({"k8s.cluster.uid": "cluster-uid-1"}, env={"K8S_NODE_NAME": "n1"})
    with receiver_for(protocol) as rx:
        ex = run(exporters, make(rx.endpoint, protocol), resource)
        ex.export(reports)
        assert ex.force_flush(10)
        spans = rx.spans()
        assert len(spans) == len(reports)
        for span, r in zip(spans, reports, strict=True):
            assert span.trace_id == r.trace_id and span.span_id == r.span_id
            assert span.parent_span_id == b""
            assert (span.name, span.kind) == (r.name, int(r.kind))
            assert (span.start_time_unix_nano, span.end_time_unix_nano) == (r.start_ns, r.end_ns)
            got, want = attrs_of(span.attributes), r.attributes()
            assert got == want
            assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}
        a, b = spans[-2:]  # two reports of one flow: one trace
        assert a.trace_id == b.trace_id and a.span_id != b.span_id
        assert a.start_time_unix_nano == b.start_time_unix_nano
        for rec in rx.received:
            rs = rec.request.resource_spans
            assert len(rs) == 1
            assert attrs_of(rs[0].resource.attributes) == resource
            scope = rs[0].scope_spans[0].scope
            assert (scope.name, scope.version) == ("mermin", mermin.__version__)
            if protocol != "grpc":
                assert rec.path == "/v1/traces" and rec.gzip
                json_ct, pb_ct = "application/json", "application/x-protobuf"
                want = json_ct if protocol == "http_json" else pb_ct
                assert rec.headers["content-type"] == want
            assert rec.headers["user-agent"].startswith("mermin/")
    assert resource["k8s.cluster.uid"] == "cluster-uid-1" and resource["k8s.node.name"] == "n1"


@pytest.mark.parametrize("protocol", ["grpc", "http_binary"])
@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_auth_and_custom_headers_reach_the_receiver(protocol: str, auth: str, exporters: list
                                                    ) -> None:  # fmt: skip
    spec = {"basic": {"user": "agent", "pass": "pa:ss"}} if auth == "basic" else {"bearer": "t0k"}
    want = (
        "Basic " + base64.b64encode(b"agent:pa:ss").decode() if auth == "basic" else "Bearer t0k"
    )
    with receiver_for(protocol) as rx:
        cfg = make(rx.endpoint, protocol, auth=spec, headers={"X-Scope-OrgID": "tenant-1"})
        ex = run(exporters, cfg)
        ex.export(flow_reports(3))
        assert ex.force_flush(10)
        headers = rx.received[0].headers
        assert headers["authorization"] == want
        assert headers["x-scope-orgid"] == "tenant-1"


def test_grpc_gzip_on_the_wire(exporters: list) -> None:
    reports = flow_reports(1000, seed=4)
    sizes = {}
    with GrpcReceiver() as rx:
        for compression in ("gzip", "none"):
            relay = TcpRelay(rx.port)
            try:
                ex = run(exporters, make(f"http://127.0.0.1:{relay.port}",
                                         compression=compression))  # fmt: skip
                ex.export(reports)
                assert ex.force_flush(10)
                ex.shutdown(2)
                sizes[compression] = relay.upstream_bytes
            finally:
                relay.close()
        assert rx.span_count() == 2000
    raw = sum(len(r.attributes()) for r in reports) * 30  # rough lower bound of the payload
    assert sizes["none"] > raw
    assert sizes["gzip"] * 4 < sizes["none"], sizes


def test_http_without_compression(exporters: list) -> None:
    with HttpReceiver() as rx:
        ex = run(exporters, make(rx.endpoint, "http_binary", compression="none"))
        ex.export(flow_reports(5))
        assert ex.force_flush(10)
        assert not rx.received[0].gzip and "content-encoding" not in rx.received[0].headers


# -- TLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http_binary"])
def test_tls_and_mtls(protocol: str, pki: Pki, exporters: list) -> None:
    ca = str(pki.ca_cert)
    client = {"client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
    fast_fail = {"max_export_timeout": 1, "timeout": 0.5}
    with receiver_for(protocol, pki=pki) as rx:
        assert rx.endpoint.startswith("https://")
        ok = run(exporters, make(rx.endpoint, protocol, tls={"ca_cert": ca}))
        ok.export(flow_reports(3))
        assert ok.force_flush(10) and ok.stats.exported == 3
        skip = run(exporters, make(rx.endpoint, protocol, tls={"insecure_skip_verify": True}))
        skip.export(flow_reports(2))
        assert skip.force_flush(10) and skip.stats.exported == 2
        other = {"ca_cert": str(pki.other_ca_cert)}
        wrong_ca = run(exporters, make(rx.endpoint, protocol, tls=other, **fast_fail))
        wrong_ca.export(flow_reports(2))
        assert wrong_ca.force_flush(10)
        assert wrong_ca.stats.exported == 0 and wrong_ca.stats.dropped["export_failed"] == 2
    with receiver_for(protocol, pki=pki, require_client_cert=True) as rx:
        mtls = run(exporters, make(rx.endpoint, protocol, tls={"ca_cert": ca, **client}))
        mtls.export(flow_reports(4))
        assert mtls.force_flush(10) and mtls.stats.exported == 4
        anon = run(exporters, make(rx.endpoint, protocol, tls={"ca_cert": ca}, **fast_fail))
        anon.export(flow_reports(2))
        assert anon.force_flush(10)
        assert anon.stats.exported == 0 and anon.stats.dropped["export_failed"] == 2
        assert rx.span_count() == 4


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http_binary"])
def test_secrets_never_in_logs_or_errors(protocol: str, exporters: list,
                                         caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    secrets = ["hunter2-PASS", "tok-SECRET-42", "hdr-SECRET-7"]
    caplog.set_level(logging.DEBUG)
    with receiver_for(protocol) as rx:
        rx.default = Reply(grpc_code=grpc.StatusCode.UNAUTHENTICATED, http_status=401,
                           message="bad credentials")  # fmt: skip
        basic = run(exporters, make(rx.endpoint, protocol,
                                    auth={"basic": {"user": "bob", "pass": secrets[0]}},
                                    headers={"x-api-key": secrets[2]}))  # fmt: skip
        bearer = run(exporters, make(rx.endpoint, protocol, auth={"bearer": secrets[1]}))
        for ex in (basic, bearer):
            ex.export(flow_reports(2))
            assert ex.force_flush(10)
            assert ex.stats.dropped["export_failed"] == 2 and ex.stats.last_error
        assert rx.received == [] and rx.attempts == 2
    down = run(exporters, make(f"http://127.0.0.1:{free_port()}", protocol,
                               auth={"bearer": secrets[1]}, max_export_timeout=0.5))  # fmt: skip
    down.export(flow_reports(1))
    assert down.force_flush(10)
    for ex in (basic, bearer, down):
        ex.shutdown(1)
    encoded = [base64.b64encode(f"bob:{secrets[0]}".encode()).decode()]
    texts = [caplog.text] + [str(ex.stats.snapshot()) for ex in (basic, bearer, down)]
    for text in texts:
        for s in secrets + encoded:
            assert s not in text
    assert "UNAUTHENTICATED" in caplog.text or "401" in caplog.text


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http_binary"])
def test_receiver_down_at_start(protocol: str, exporters: list) -> None:
    port = free_port()
    ex = run(exporters, make(f"http://127.0.0.1:{port}", protocol, max_export_timeout=10))
    ex.export(flow_reports(50))
    time.sleep(1.0)
    assert ex.stats.exported == 0 and ex.stats.retries >= 1
    with receiver_for(protocol, port=port) as rx:
        assert rx.wait_spans(50, 10) == 50
        assert ex.force_flush(10)
        assert ex.stats.exported == 50 and ex.stats.dropped_total == 0


@pytest.mark.parametrize("protocol", ["grpc", "http_binary"])
def test_outage_mid_run(protocol: str, exporters: list) -> None:
    """Receiver stopped for OUTAGE_S while reports keep coming: the ones that fit the queue
    arrive after it comes back, the rest are counted as dropped, nothing hangs."""
    capacity, batch = 400, 50
    rx = receiver_for(protocol).start()
    port = rx.port
    try:
        ex = run(exporters, make(rx.endpoint, protocol, max_queue_size=capacity,
                                 max_batch_size=batch, max_concurrent_exports=2,
                                 timeout=0.5, max_export_timeout=OUTAGE_S + 10))  # fmt: skip
        reports = flow_reports(3000, seed=11)
        ex.export(reports[:200])
        assert rx.wait_spans(200, 10) == 200
        rx.stop()
        during = reports[200:2800]
        start = time.monotonic()
        step = max(1, len(during) // 20)
        for i in range(0, len(during), step):  # spread over the outage, like a poll loop
            ex.export(during[i : i + step])
            time.sleep(OUTAGE_S / 20)
        assert time.monotonic() - start < OUTAGE_S + 2  # export() never blocked
        assert ex.queued <= capacity
        rx = receiver_for(protocol, port=port).start()
        assert ex.force_flush(OUTAGE_S + 15)  # the queue drains into the new receiver
        ex.export(reports[2800:])
        assert ex.force_flush(10)
        s = ex.stats
        got = {sp.span_id for sp in rx.spans()}
        assert s.exported == 200 + len(got)
        assert s.exported + s.dropped_total == len(reports)
        assert s.dropped["queue_full"] >= len(during) - capacity - 4 * batch
        newest = {r.span_id for r in during[-capacity:]}
        assert newest <= got  # what fit the queue arrived
        assert {r.span_id for r in reports[2800:]} <= got
        t0 = time.monotonic()
        ex.shutdown(5)
        assert time.monotonic() - t0 < 5
    finally:
        rx.stop()


def test_grpc_unavailable_with_retry_info(exporters: list) -> None:
    with GrpcReceiver() as rx:
        rx.script = [Reply(grpc_code=grpc.StatusCode.UNAVAILABLE, retry_delay=0.4)] * 2
        ex = run(exporters, make(rx.endpoint, retry={"initial_backoff": 0.01, "max_backoff": 0.01}))
        start = time.monotonic()
        ex.export(flow_reports(10))
        assert rx.wait_spans(10, 10) == 10
        assert time.monotonic() - start >= 0.8  # the hint, not the 10 ms backoff
        assert ex.force_flush(5)
        assert ex.stats.retries == 2 and ex.stats.exported == 10 and rx.attempts == 3


def test_grpc_resource_exhausted_retryable_only_with_retry_info(exporters: list) -> None:
    with GrpcReceiver() as rx:
        rx.script = [Reply(grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay=0.1),
                     Reply(grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED)]  # fmt: skip
        ex = run(exporters, make(rx.endpoint))
        ex.export(flow_reports(5))
        assert ex.force_flush(10)
        assert rx.attempts == 2 and ex.stats.retries == 1
        assert ex.stats.failed_non_retryable == 5 and "RESOURCE_EXHAUSTED" in ex.stats.last_error


def test_grpc_non_retryable_code(exporters: list) -> None:
    with GrpcReceiver() as rx:
        rx.script = [Reply(grpc_code=grpc.StatusCode.INVALID_ARGUMENT, message="bad span")]
        ex = run(exporters, make(rx.endpoint))
        ex.export(flow_reports(5))
        assert ex.force_flush(10)
        assert rx.attempts == 1 and ex.stats.failed_non_retryable == 5
        assert "INVALID_ARGUMENT" in ex.stats.last_error and "bad span" in ex.stats.last_error


def test_http_503_retry_after_and_429(exporters: list) -> None:
    with HttpReceiver() as rx:
        rx.script = [Reply(http_status=503, retry_delay=1), Reply(http_status=429),
                     Reply(http_status=502)]  # fmt: skip
        ex = run(exporters, make(rx.endpoint, "http_binary",
                                 retry={"initial_backoff": 0.01, "max_backoff": 0.01}))
        start = time.monotonic()
        ex.export(flow_reports(10))
        assert rx.wait_spans(10, 10) == 10
        assert time.monotonic() - start >= 1.0  # Retry-After: 1
        assert ex.force_flush(5)
        assert ex.stats.retries == 3 and ex.stats.exported == 10


def test_http_400_not_retried(exporters: list) -> None:
    with HttpReceiver() as rx:
        rx.script = [Reply(http_status=400, message="malformed")]
        ex = run(exporters, make(rx.endpoint, "http_binary"))
        ex.export(flow_reports(5))
        assert ex.force_flush(10)
        assert rx.attempts == 1 and ex.stats.failed_non_retryable == 5
        assert "400" in ex.stats.last_error and "malformed" in ex.stats.last_error


@pytest.mark.parametrize("protocol", ["grpc", "http_binary"])
def test_slow_receiver_times_out_then_recovers(protocol: str, exporters: list) -> None:
    with receiver_for(protocol) as rx:
        rx.script = [Reply(delay=1.0)]  # first attempt answers too late
        ex = run(exporters, make(rx.endpoint, protocol, timeout=0.3, max_export_timeout=5))
        ex.export(flow_reports(5))
        assert ex.force_flush(10)
        s = ex.stats
        assert s.timeouts >= 1 and s.retries >= 1 and s.exported == 5
    with receiver_for(protocol) as rx:
        rx.default = Reply(delay=1.0)  # always too slow: dropped after max_export_timeout
        ex = run(exporters, make(rx.endpoint, protocol, timeout=0.3, max_export_timeout=0.8))
        start = time.monotonic()
        ex.export(flow_reports(5))
        assert ex.force_flush(10)
        assert time.monotonic() - start < 3
        assert ex.stats.failed_retries_exhausted == 5 and ex.stats.timeouts >= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_success(protocol: str, exporters: list) -> None:
    with receiver_for(protocol) as rx:
        rx.script = [Reply(rejected=3, message="3 spans too old")]
        ex = run(exporters, make(rx.endpoint, protocol, max_batch_size=10))
        ex.export(flow_reports(10))
        assert ex.force_flush(10)
        assert ex.stats.partial_rejected == 3 and ex.stats.exported == 7
