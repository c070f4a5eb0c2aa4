"""Smoke tests of the live-agent benchmarks (bench/bench_agent_latency.py, bench_agent_load.py):
their pure helpers on synthetic input, the generated agent config against mermin's own config
loader, and one very short real run of each (about 25 s together)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_agent_latency as lat  # noqa: E402
import bench_agent_load as load  # noqa: E402


# ------------------------------------------------------------------------------ helpers
def test_percentile_and_summary() -> None:
    values = [float(i) for i in range(1, 101)]  # 1..100
    assert lat.percentile(values, 50) == 51.0  # nearest rank on 0-based index 49.5 -> 50
    assert lat.percentile(values, 95) == 95.0
    assert lat.percentile(values, 100) == 100.0
    assert lat.percentile([], 95) is None
    s = lat.summary([3.0, 1.0, 2.0])
    assert (s["n"], s["p50"], s["max"]) == (3, 2.0, 3.0)


def _line(arrival: int, sport: int, dport: int, reason: str, end_ns: int,
          transport: str = "tcp") -> tuple[int, bytes]:
    d = {"end_time_unix_nano": end_ns, "flow.end_reason": reason, "network.transport": transport,
         "source.address": "10.66.0.1", "source.port": sport,
         "destination.address": "10.66.0.2", "destination.port": dport}
    return arrival, json.dumps(d).encode() + b"\n"


def test_final_reports_and_latencies() -> None:
    srv = lat.SERVER_PORT
    lines = [
        (0, b"not json\n"),
        _line(1_000, 40000, srv, "active_timeout", 500),  # an interim report
        _line(3_000_000_000, 40000, srv, "end_of_flow", 1_000_000_000),
        _line(2_500_000_000, srv, 40001, "end_of_flow", 1_500_000_000),  # server seen as source
        _line(2_000_000_000, 40002, 53, "end_of_flow", 0),  # another service: ignored
        _line(2_000_000_000, 40003, srv, "end_of_flow", 0, transport="udp"),  # not TCP
        _line(9_000_000_000, 40004, srv, "forced_end", 8_000_000_000),  # after the stop
    ]
    finals, reasons = lat.final_reports(lines, srv, stopped_at_ns=8_500_000_000)
    assert set(finals) == {40000, 40001}
    assert finals[40000].reports == 2 and finals[40000].end_reason == "end_of_flow"
    assert reasons == {"active_timeout": 1, "end_of_flow": 2, "forced_end": 1}
    # against the report's own end time
    assert lat.latencies(finals, None) == [1.0, 2.0]
    # against an independent clock; a port without a reference is left out
    assert lat.latencies(finals, {40000: 2_000_000_000}) == [1.0]


def test_agent_config_is_valid_for_mermin(tmp_path: Path) -> None:
    from mermin.config.loader import load_config

    text = lat.agent_config(["veth1", "veth2"], 19001, 19002, span={"udp_timeout": "5s"},
                            capacity=65536, export=load._export_block("otlp", 4317))
    path = tmp_path / "agent.hcl"
    path.write_text(text)
    cfg = load_config(str(path))
    assert cfg.span.udp_timeout == 5.0
    assert cfg.span.poll_interval == 1.0 and cfg.span.tcp_close_linger == 0.5  # defaults
    assert cfg.pipeline.flow_capture.flow_stats_capacity == 65536
    assert cfg.pipeline.flow_capture.pin_maps is False
    assert cfg.export.traces.otlp is not None and cfg.export.traces.stdout is None
    assert cfg.internal.metrics.port == 19001 and cfg.internal.metrics.listen_address == "127.0.0.1"
    # the latency benchmark's config leaves `span` at its defaults and prints JSON
    path.write_text(lat.agent_config(["veth1"], 19001, 19002))
    cfg = load_config(str(path))
    assert cfg.span.model_dump() == type(cfg.span)().model_dump()
    assert cfg.export.traces.stdout is not None and cfg.export.traces.stdout.format == "json"


def test_prometheus_parsing_sums_and_losses() -> None:
    text = "\n".join([
        "# HELP mermin_export_dropped_total drops",
        'mermin_export_dropped_total{exporter="stdout",reason="closed_pipe"} 0.0',
        'mermin_export_dropped_total{exporter="otlp",reason="queue_full"} 7.0',
        'mermin_export_dropped_created{exporter="otlp",reason="queue_full"} 1.7e9',
        "mermin_ebpf_map_full 3.0",
        'mermin_ebpf_unparsed{reason="ethertype"} 5.0',
        'mermin_ebpf_map_size{map="FLOWS"} 22000.0',
        'mermin_ebpf_map_size{map="FRAGS"} 4.0',
    ])
    m = lat.parse_prometheus(text)
    assert m['mermin_ebpf_map_size{map="FLOWS"}'] == 22000.0
    assert load.metric_sum(m, "mermin_ebpf_map_size") == 22004.0
    assert load.metric_sum(m, "mermin_ebpf_map_size", "FLOWS") == 22000.0
    assert load.agent_losses(m) == {
        'mermin_export_dropped_total{exporter="otlp",reason="queue_full"}': 7,
        "mermin_ebpf_map_full": 3,
    }


def test_line_counter_keeps_new_flows_whichever_side() -> None:
    counter = load.LineCounter()
    counter(0, json.dumps({"source.address": "10.202.0.1", "source.port": 10000,
                           "flow.end_reason": "idle_timeout"}).encode())
    counter(0, json.dumps({"destination.address": "10.202.0.2", "destination.port": 10001,
                           "source.address": "10.66.0.2", "flow.end_reason": "idle_timeout"}
                          ).encode())
    counter(0, b'{"source.address":"10.201.0.1","source.port":30000}')
    assert counter.lines == 3
    assert counter.new_flows == {("10.202.0.1", 10000), ("10.202.0.2", 10001)}
    assert counter.reasons == {"idle_timeout": 2}


@pytest.mark.parametrize("argv", [["--active", "0"], ["--active-period", "9"],
                                  ["--new-rate", "-1"], ["--seconds", "0"],
                                  ["--exporter", "kafka"]])
def test_load_args_rejected(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        load.parse_args(argv)


def test_latency_args() -> None:
    args = lat.parse_args([])
    assert (args.connections, args.seconds) == (300, 30.0)
    with pytest.raises(SystemExit):
        lat.parse_args(["--connections", "0"])


# ------------------------------------------------------------------------------ real runs
@pytest.mark.privileged
@pytest.mark.usefixtures("require_root", "bpf_object")
def test_latency_short_real_run() -> None:
    args = lat.parse_args(["--connections", "12", "--seconds", "2", "--settle", "2.5"])
    res = lat.run(args, log=lambda _s: None)
    assert res["connections"] == 12
    assert res["missing"] == 0, res
    assert res["end_reasons"].get("end_of_flow") == 12
    s = res["latency_vs_server_close"]
    # default settings: 0.5 s close linger + at most one 1 s poll; generous for a loaded CI box
    assert 0.3 < s["p50"] < 3.0 and s["max"] < 5.0, res
    # the agent's boot->wall clock conversion agrees with the client's clock within 100 ms
    assert abs(res["client_minus_report_end_ms"]["p50"]) < 100, res


@pytest.mark.privileged
@pytest.mark.usefixtures("require_root", "bpf_object")
def test_load_short_real_run(tmp_path: Path) -> None:
    args = load.parse_args(["--active", "500", "--active-period", "0.5", "--new-rate", "200",
                            "--udp-timeout", "1", "--warmup", "2", "--seconds", "3"])
    with load.make_pods() as pods:
        res = load.measure(args, pods, tmp_path, lambda _s: None, None)
    assert res.new_flows_sent > 500
    assert res.new_flows_reported == res.new_flows_sent, res
    assert res.losses == {}, res
    assert res.end_reasons == {"idle_timeout": res.new_flows_sent}
    assert 0 < res.cpu_pct < 100 and res.rss_max_mb > 10
    assert res.reports_per_s > 50
    assert res.flows_in_map > 500
