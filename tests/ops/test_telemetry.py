"""Metrics registry and server, health server, logging helpers (real HTTP over loopback)."""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mermin.config.internal import InternalConfig, MetricsConfig, ServerConfig
from mermin.errors import MerminError
from mermin.telemetry import metrics
from mermin.telemetry.health import HealthServer
from mermin.telemetry.logging import RateLimitedLogger, log_every, setup_logging
from mermin.telemetry.server import MetricsServer, serve_metrics

REPO = Path(__file__).resolve().parents[2]
OPERATIONS = REPO / "docs" / "operations.md"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def documented_metrics() -> dict[str, str]:
    """{name: type} from the metrics table of docs/operations.md (`| `name` | type | ...`)."""
    rows = re.findall(r"^\| `(mermin_[a-z0-9_]+)` \| (counter|gauge|histogram) \|",
                      OPERATIONS.read_text(), re.M)
    return dict(rows)


@pytest.fixture
def metrics_server():
    server = MetricsServer(MetricsConfig(listen_address="127.0.0.1", port=0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_every_registered_metric_is_documented_and_vice_versa():
    documented = documented_metrics()
    assert len(documented) >= 30
    registered = set(metrics.metric_names())
    assert registered == set(documented), (
        f"undocumented: {sorted(registered - set(documented))}; "
        f"documented but missing: {sorted(set(documented) - registered)}"
    )


def test_original_metric_names_kept():
    names = set(metrics.metric_names())
    for original in ("mermin_ebpf_map_size", "mermin_ebpf_map_capacity", "mermin_ebpf_method",
                     "mermin_ebpf_tc_programs_total", "mermin_flow_spans_created_total",
                     "mermin_flow_spans_active_total", "mermin_export_flow_spans_total",
                     "mermin_export_batch_size", "mermin_k8s_decorator_flow_spans_total",
                     "mermin_k8s_watcher_events_total",
                     "mermin_k8s_watcher_ip_index_update_duration_seconds",
                     "mermin_pipeline_duration_seconds", "mermin_shutdown_duration_seconds",
                     "mermin_interface_packets_total", "mermin_interface_bytes_total"):
        assert original in names


def test_server_serves_every_documented_metric_with_its_type(metrics_server):
    metrics.KERNEL_COUNTERS.set_source(lambda: {"seen": 10, "counted": 7, "duplicate": 3,
                                                "unparsed_too_deep": 2, "map_full": 1})
    try:
        status, body = _get(f"http://127.0.0.1:{metrics_server.port}/metrics")
    finally:
        metrics.KERNEL_COUNTERS.set_source(None)
    assert status == 200
    served = {}
    for family in text_string_to_metric_families(body):
        served[family.name] = family
    documented = documented_metrics()
    for name, mtype in documented.items():
        base = name.removesuffix("_total") if mtype == "counter" else name
        assert base in served, f"{name} not served"
        assert served[base].type == mtype, name
    packets = {s.labels["result"]: s.value for s in served["mermin_ebpf_packets"].samples}
    assert packets == {"seen": 10.0, "counted": 7.0, "duplicate": 3.0}
    unparsed = {s.labels["reason"]: s.value
                for s in served["mermin_ebpf_unparsed_packets"].samples}
    assert unparsed["too_deep"] == 2.0 and unparsed["truncated"] == 0.0
    assert served["mermin_ebpf_map_full"].samples[0].value == 1.0


def test_kernel_counter_source_that_raises_does_not_break_scrape(metrics_server):
    def broken() -> dict[str, int]:
        raise OSError("map closed")

    metrics.KERNEL_COUNTERS.set_source(broken)
    try:
        status, body = _get(f"http://127.0.0.1:{metrics_server.port}/metrics")
    finally:
        metrics.KERNEL_COUNTERS.set_source(None)
    assert status == 200
    assert "# TYPE mermin_ebpf_packets_total counter" in body
    assert "mermin_ebpf_packets_total{" not in body


def test_summary_debug_and_unknown_routes(metrics_server):
    status, body = _get(f"http://127.0.0.1:{metrics_server.port}/metrics:summary")
    assert status == 200
    names = {m["name"] for m in json.loads(body)["metrics"]}
    assert names == set(metrics.metric_names())
    assert _get(f"http://127.0.0.1:{metrics_server.port}/metrics/debug")[0] == 404
    assert _get(f"http://127.0.0.1:{metrics_server.port}/nope")[0] == 404
    with MetricsServer(MetricsConfig(listen_address="127.0.0.1", port=0,
                                     debug_metrics_enabled=True)) as debug:
        status, body = _get(f"http://127.0.0.1:{debug.port}/metrics/debug")
        assert status == 200 and "mermin_ebpf_map_size" in body


def test_serve_metrics_disabled_and_port_in_use(metrics_server):
    assert serve_metrics(MetricsConfig(enabled=False)) is None
    assert metrics.start_metrics_server(MetricsConfig(enabled=False)) is None
    busy = MetricsConfig(listen_address="127.0.0.1", port=metrics_server.port)
    with pytest.raises(MerminError, match=r"cannot serve metrics on 127\.0\.0\.1"):
        serve_metrics(busy)


def test_start_metrics_server_wires_kernel_counters():
    cfg = MetricsConfig(listen_address="127.0.0.1", port=0)
    stop = metrics.start_metrics_server(cfg, kernel_counters=lambda: {"map_full": 9})
    assert stop is not None
    try:
        assert metrics.REGISTRY.get_sample_value("mermin_ebpf_map_full_total") == 9.0
    finally:
        stop()
    assert metrics.REGISTRY.get_sample_value("mermin_ebpf_map_full_total") is None


def test_map_gauges_and_histogram_buckets_from_config():
    metrics.set_map_gauges("FLOWS", entries=512, capacity=2048, entry_bytes=200)
    assert metrics.REGISTRY.get_sample_value(
        "mermin_ebpf_map_fill_ratio", {"map": "FLOWS"}) == 0.25
    assert metrics.REGISTRY.get_sample_value(
        "mermin_ebpf_map_size", {"map": "FLOWS", "unit": "bytes"}) == 512 * 200
    cfg = InternalConfig.model_validate(
        {"metrics": {"histogram_buckets": {"mermin_export_batch_size": [1, 5, 5000]}}})
    try:
        metrics.apply_histogram_buckets(cfg.metrics.histogram_buckets)
        metrics.EXPORT_BATCH_SIZE.observe(4000)
        assert metrics.REGISTRY.get_sample_value(
            "mermin_export_batch_size_bucket", {"le": "5000.0"}) == 1.0
        assert metrics.REGISTRY.get_sample_value(
            "mermin_export_batch_size_bucket", {"le": "5.0"}) == 0.0
        with pytest.raises(ValueError, match="no histogram"):
            metrics.apply_histogram_buckets({"mermin_nope": [1.0]})
    finally:
        metrics.apply_histogram_buckets(
            {"mermin_export_batch_size": metrics.DEFAULT_BUCKETS["mermin_export_batch_size"]})


def test_internal_config_defaults_and_errors():
    cfg = InternalConfig()
    assert (cfg.metrics.port, cfg.metrics.listen_address, cfg.metrics.enabled) == (
        10250, "0.0.0.0", True)
    assert cfg.metrics.stale_metric_ttl == 300.0 and not cfg.metrics.debug_metrics_enabled
    assert (cfg.server.port, cfg.server.enabled) == (8080, True)
    assert cfg.traces.span_fmt == "full"
    with pytest.raises(ValueError, match="unknown histogram"):
        InternalConfig.model_validate({"metrics": {"histogram_buckets": {"x": [1]}}})
    with pytest.raises(ValueError, match="increasing"):
        InternalConfig.model_validate(
            {"metrics": {"histogram_buckets": {"mermin_export_batch_size": [5, 1]}}})
    with pytest.raises(ValueError):
        InternalConfig.model_validate({"server": {"prot": 1}})
    for model in (cfg.metrics, cfg.server, cfg.traces, cfg):
        for name, field in type(model).model_fields.items():
            assert field.description, f"{type(model).__name__}.{name} has no description"


# --- health ------------------------------------------------------------------------------------
@pytest.fixture
def health():
    state = {"attached": True, "synced": False}

    def exporter_check() -> bool:
        raise RuntimeError("boom")

    server = HealthServer(
        ServerConfig(listen_address="127.0.0.1", port=0),
        {"program_attached": lambda: state["attached"],
         "k8s_caches_synced": lambda: state["synced"]},
    )
    server.start()
    try:
        yield server, state, exporter_check
    finally:
        server.stop()


def test_health_codes_follow_checks(health):
    server, state, exporter_check = health
    base = f"http://127.0.0.1:{server.port}"
    status, body = _get(base + "/startup")
    assert status == 503 and json.loads(body)["status"] == "unavailable"
    assert _get(base + "/livez")[0] == 200

    server.mark_started()
    assert _get(base + "/startup")[0] == 200
    status, body = _get(base + "/readyz")
    assert status == 503
    assert json.loads(body) == {"status": "unavailable", "checks": {
        "program_attached": True, "k8s_caches_synced": False, "startup_complete": True}}

    state["synced"] = True
    status, body = _get(base + "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ok"

    server.set_check("exporter_ok", exporter_check)  # raising == failing
    status, body = _get(base + "/readyz")
    assert status == 503 and json.loads(body)["checks"]["exporter_ok"] is False
    server.remove_check("exporter_ok")
    assert _get(base + "/readyz")[0] == 200

    server.set_check("program_loaded", lambda: False, live=True)
    assert _get(base + "/livez")[0] == 503


def test_health_startup_callable():
    done = {"v": False}
    server = HealthServer(ServerConfig(listen_address="127.0.0.1", port=0), {},
                          startup=lambda: done["v"])
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/startup")[0] == 503 and _get(base + "/readyz")[0] == 503
        done["v"] = True
        assert _get(base + "/startup")[0] == 200 and _get(base + "/readyz")[0] == 200
    finally:
        server.stop()


def test_health_disabled_does_not_bind():
    server = HealthServer(ServerConfig(enabled=False, port=0), {})
    server.start()
    assert server._httpd is None
    server.stop()


# --- logging -----------------------------------------------------------------------------------
def test_rate_limited_logger_counts_suppressed(caplog):
    now = [100.0]
    logger = logging.getLogger("mermin.test.ratelimit")
    limiter = RateLimitedLogger(logger, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="mermin.test.ratelimit"):
        assert limiter.warning("drop", "dropped %d spans", 5)
        assert not limiter.warning("drop", "dropped %d spans", 6)
        assert not limiter.warning("drop", "dropped %d spans", 7)
        assert limiter.warning("other", "another key")  # keys are independent
        assert limiter.suppressed("drop") == 2
        now[0] += 10.0
        assert limiter.warning("drop", "dropped %d spans", 8)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["dropped 5 spans", "another key",
                        "dropped 8 spans (2 similar suppressed in the last 10s)"]
    assert limiter.suppressed("drop") == 0


def test_log_every_module_level(caplog):
    logger = logging.getLogger("mermin.test.every")
    with caplog.at_level(logging.WARNING, logger="mermin.test.every"):
        results = [log_every("k", 3600, "msg %d", i, logger=logger) for i in range(5)]
    assert results == [True, False, False, False, False]
    assert [r.getMessage() for r in caplog.records] == ["msg 0"]


def test_setup_logging_json_and_text():
    stream = io.StringIO()
    setup_logging("trace", "json", stream=stream)
    try:
        log = logging.getLogger("mermin.test.json")
        log.log(5, "trace line")
        log.info("hello %s", "world", extra={"ifname": "eth0"})
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert lines[0]["level"] == "trace" and lines[0]["msg"] == "trace line"
        assert lines[1]["msg"] == "hello world" and lines[1]["ifname"] == "eth0"
        assert lines[1]["logger"] == "mermin.test.json"

        stream2 = io.StringIO()
        setup_logging("warn", "text", stream=stream2)
        log.info("hidden")
        log.warning("shown")
        out = stream2.getvalue()
        assert "hidden" not in out and "WARNING mermin.test.json: shown" in out
        assert stream.getvalue().count("\n") == 2  # the old handler was replaced
        with pytest.raises(MerminError, match="unknown log level"):
            setup_logging("loud", "text")
    finally:
        root = logging.getLogger("mermin")
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.propagate = True
        root.setLevel(logging.NOTSET)


def test_documented_labels_match_registry():
    rows = re.findall(r"^\| `(mermin_[a-z0-9_]+)` \| \w+ \| ([^|]+) \|",
                      OPERATIONS.read_text(), re.M)
    doc_labels = {name: set() if cell.strip() == "—" else {x.strip() for x in cell.split(",")}
                  for name, cell in rows}
    actual: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if hasattr(obj, "_labelnames") and hasattr(obj, "_name"):
            suffix = "_total" if obj._type == "counter" else ""
            actual[obj._name + suffix] = set(obj._labelnames)
    metrics.KERNEL_COUNTERS.set_source(lambda: {})
    try:
        for family in metrics.KERNEL_COUNTERS.collect():
            actual[family.name + "_total"] = {k for s in family.samples for k in s.labels}
    finally:
        metrics.KERNEL_COUNTERS.set_source(None)
    assert doc_labels == actual


@pytest.mark.privileged
def test_kernel_counters_from_a_real_datapath(require_root, bpf_object, metrics_server):
    """Packets run through the real program show up in the scrape (per-CPU sums)."""
    import struct

    from mermin.datapath import libbpf
    from mermin.datapath.loader import Datapath, DatapathSettings

    def frame(ethertype: int, payload: bytes) -> bytes:
        return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype) + payload

    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    udp = struct.pack("!HHHH", 40000, 53, 8, 0)
    with Datapath.load(bpf_object, DatapathSettings(pin=False, flows_capacity=1024)) as dp:
        fd = dp.program_fd("mermin_ingress")
        libbpf.prog_test_run(fd, frame(0x0800, ip + udp), repeat=3)
        libbpf.prog_test_run(fd, frame(0x0806, b"\x00" * 28))  # ARP: unparsed ethertype
        stop = metrics.start_metrics_server(
            MetricsConfig(listen_address="127.0.0.1", port=0), kernel_counters=dp.counters)
        try:
            status, body = _get(f"http://127.0.0.1:{metrics_server.port}/metrics")
        finally:
            stop()
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    packets = {s.labels["result"]: s.value for s in families["mermin_ebpf_packets"].samples}
    assert packets["seen"] == 4.0 and packets["counted"] == 3.0
    unparsed = {s.labels["reason"]: s.value
                for s in families["mermin_ebpf_unparsed_packets"].samples}
    assert unparsed["ethertype"] == 1.0


def test_internal_blocks_from_hcl_with_original_syntax():
    from mermin.config import parse_config

    cfg = parse_config(
        'internal "metrics" {\n  port = 9100\n  debug_metrics_enabled = true\n'
        '  stale_metric_ttl = "2m"\n'
        '  histogram_buckets {\n    mermin_pipeline_duration_seconds = [0.001, 0.1, 1]\n  }\n}\n'
        'internal "server" {\n  listen_address = "127.0.0.1"\n  port = 9101\n}\n'
        'internal "traces" {\n  span_fmt = "full"\n'
        '  otlp = { endpoint = "http://collector:4317" }\n}\n')
    assert cfg.internal.metrics.port == 9100 and cfg.internal.metrics.debug_metrics_enabled
    assert cfg.internal.metrics.stale_metric_ttl == 120.0
    assert cfg.internal.metrics.histogram_buckets == {
        "mermin_pipeline_duration_seconds": [0.001, 0.1, 1.0]}
    assert (cfg.internal.server.listen_address, cfg.internal.server.port) == ("127.0.0.1", 9101)
    assert cfg.internal.traces.otlp == {"endpoint": "http://collector:4317"}


def test_every_metric_object_is_exported():
    public = {n for n, v in vars(metrics).items() if n.isupper() and hasattr(v, "_name")}
    assert public <= set(metrics.__all__)
    assert "KERNEL_COUNTERS" in metrics.__all__


def test_import_has_no_side_effects():
    """Importing the registry starts no thread and opens no socket."""
    import subprocess
    import sys

    code = ("import threading, os\n"
            "import mermin.telemetry, mermin.telemetry.metrics\n"
            "links = []\n"
            "for f in os.listdir('/proc/self/fd'):\n"
            "    try:\n"
            "        links.append(os.readlink(f'/proc/self/fd/{f}'))\n"
            "    except OSError:\n"
            "        pass\n"
            "print(threading.active_count(), sum(x.startswith('socket:') for x in links))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["1", "0"]
