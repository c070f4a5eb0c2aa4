"""Smoke tests of the traffic benchmarks (bench/): their helpers, argument parsing, table
formatting, the observers' report parsers, and one short real run of the overhead harness
(no peers) that must count the iperf3 UDP flow exactly."""

from __future__ import annotations

import json
import socket
import struct
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_accuracy  # noqa: E402
import bench_common  # noqa: E402
import bench_observers  # noqa: E402
import bench_overhead  # noqa: E402
import bench_scale  # noqa: E402
import run_all  # noqa: E402


# ------------------------------------------------------------------------------ tables
def test_format_table_aligns_columns_and_formats_numbers() -> None:
    out = bench_common.format_table(
        ["test", "Gbit/s", "pkts"], [["tcp-1", 9.12345, 1234567], ["udp-64", 123.45, None]])
    lines = out.splitlines()
    assert lines[0].split() == ["test", "Gbit/s", "pkts"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["tcp-1", "9.123", "1,234,567"]
    assert lines[3].split() == ["udp-64", "123.5", "-"]
    assert len({len(line) for line in lines[:3]}) == 1  # aligned


def test_format_table_markdown() -> None:
    out = bench_common.format_table(["a", "b"], [["x", 1]], markdown=True)
    assert out.splitlines() == ["| a | b |", "|---|---|", "| x | 1 |"]


# ------------------------------------------------------------------------------ arguments
def test_overhead_args_defaults_and_baseline_added() -> None:
    args = bench_overhead.parse_args(["--observers", "datapath", "--tests", "udp-64"])
    assert args.observers == ["none", "datapath"]
    assert args.tests == ["udp-64"]
    assert (args.seconds, args.repeat) == (5.0, 3)


@pytest.mark.parametrize("argv", [["--observers", "tcpdump"], ["--tests", "sctp"],
                                  ["--seconds", "0"], ["--repeat", "0"]])
def test_overhead_args_rejected(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench_overhead.parse_args(argv)


def test_rates() -> None:
    assert bench_accuracy.parse_rate("50k") == 50_000
    assert bench_accuracy.parse_rate("1.5M") == 1_500_000
    assert bench_accuracy.parse_rate("max") is None
    assert bench_accuracy.rate_arg(1000) == str(1000 * 64 * 8)
    assert bench_accuracy.rate_arg(None) == "0"
    with pytest.raises(ValueError):
        bench_accuracy.parse_rate("-3")
    with pytest.raises(SystemExit):
        bench_accuracy.parse_args(["--rates", "fast"])


def test_scale_args() -> None:
    args = bench_scale.parse_args(["--rates", "1k,max", "--parts", "memory"])
    assert args.rates == [("1k", 1000), ("max", None)]
    assert args.parts == {"memory"}
    with pytest.raises(SystemExit):
        bench_scale.parse_args(["--parts", "cpu"])


def test_run_all_plan_covers_every_part() -> None:
    for quick in (True, False):
        plan = run_all.plan(quick, markdown=True)
        assert set(plan) == set(run_all.PARTS)
        assert all("--markdown" in argv for argv in plan.values())
    # every planned argv is accepted by its part
    plan = run_all.plan(False, markdown=False)
    bench_overhead.parse_args(plan["overhead"])
    bench_accuracy.parse_args(plan["accuracy"])
    bench_scale.parse_args(plan["scale"])


def test_iperf_args() -> None:
    assert bench_common.iperf_args("10.0.0.2", "tcp-8", 3)[-2:] == ["-P", "8"]
    udp = bench_common.iperf_args("10.0.0.2", "udp-64", 3, "512000")
    assert udp[-5:] == ["-u", "-l", "64", "-b", "512000"]
    with pytest.raises(ValueError):
        bench_common.iperf_args("10.0.0.2", "quic", 3)


def test_parse_iperf_udp_and_tcp() -> None:
    udp = {"start": {"connected": [{"local_port": 40000}]},
           "end": {"sum": {"seconds": 2.0, "bits_per_second": 1e6, "bytes": 6400,
                           "packets": 100, "lost_packets": 10},
                   "cpu_utilization_percent": {"host_total": 50.0, "remote_total": 20.0}}}
    r = bench_common.parse_iperf("udp-64", udp)
    assert (r.packets_sent, r.lost_packets, r.ports) == (100, 10, [40000])
    assert r.bits_per_second == pytest.approx(0.9e6)
    tcp = {"start": {"connected": [{"local_port": 1}, {"local_port": 2}]},
           "end": {"sum_received": {"seconds": 1.0, "bits_per_second": 8e9},
                   "sum_sent": {"bytes": 10**9}}}
    r = bench_common.parse_iperf("tcp-8", tcp)
    assert (r.gbps, r.bytes_sent, r.ports) == (8.0, 10**9, [1, 2])
    with pytest.raises(RuntimeError, match="unable to connect"):
        bench_common.parse_iperf("tcp-1", {"error": "unable to connect"})


# ------------------------------------------------------------------------------ parsers
def test_parse_netflow_v5() -> None:
    header = struct.pack("!HHIIIIBBH", 5, 2, 0, 0, 0, 77, 0, 0, 0)
    recs = b"".join(
        struct.pack("!4s4s4sHHIIIIHHBBBBHHBBH", socket.inet_aton(src), socket.inet_aton(dst),
                    b"\0" * 4, 0, 0, pkts, octets, 0, 0, sp, dp, 0, 0, 17, 0, 0, 0, 0, 0, 0)
        for src, dst, pkts, octets, sp, dp in [("10.0.0.1", "10.0.0.2", 5, 460, 1234, 5201),
                                               ("10.0.0.2", "10.0.0.1", 1, 32, 5201, 1234)])
    seq, flows = bench_observers.parse_netflow_v5(header + recs)
    assert seq == 77
    assert flows[0] == bench_observers.FlowCount("10.0.0.1", 1234, "10.0.0.2", 5201, 17, 5, 460)
    assert bench_observers.sum_flows(flows, "10.0.0.2", 5201, "10.0.0.1", 1234, 17) == (1, 32)
    with pytest.raises(ValueError):
        bench_observers.parse_netflow_v5(struct.pack("!HHIIIIBBH", 9, 0, 0, 0, 0, 0, 0, 0, 0))


def test_parse_prometheus_and_agent_drops() -> None:
    text = "\n".join([
        "# HELP mermin_ebpf_map_full_total x",
        "mermin_ebpf_map_full_total 3.0",
        'mermin_ebpf_unparsed_packets_total{reason="ethertype"} 4.0',
        'mermin_ebpf_unparsed_packets_total{reason="truncated"} 1.0',
        'mermin_export_dropped_total{exporter="stdout",reason="queue_full"} 0.0',
        "mermin_interfaces_attached 2.0",
    ])
    metrics = bench_observers.parse_prometheus(text)
    assert metrics["mermin_interfaces_attached"] == 2.0
    assert bench_observers.agent_drops(metrics) == {
        "mermin_ebpf_map_full_total": 3,
        'mermin_ebpf_unparsed_packets_total{reason="truncated"}': 1,
    }


def test_flows_from_reports_both_directions() -> None:
    report = {"network.transport": "udp", "source.address": "10.0.0.1", "source.port": 4000,
              "destination.address": "10.0.0.2", "destination.port": 5201,
              "flow.packets.delta": 10, "flow.bytes.delta": 920,
              "flow.reverse.packets.delta": 1, "flow.reverse.bytes.delta": 32}
    flows = bench_observers.flows_from_reports([report, report])
    assert bench_observers.sum_flows(flows, "10.0.0.1", 4000, "10.0.0.2", 5201, 17) == (20, 1840)
    assert bench_observers.sum_flows(flows, "10.0.0.2", 5201, "10.0.0.1", 4000, 17) == (2, 64)


def test_summarize_medians_and_ratios() -> None:
    def rr(obs: str, gbps: float, pps: float, rnd: int) -> bench_overhead.RunResult:
        return bench_overhead.RunResult(obs, "udp-64", rnd, gbps, pps, 1_000_000, 0.5, 0.1,
                                        10.0, reported=100, truth=100)

    results = [rr("none", 1.0, 200e3, 0), rr("none", 1.0, 220e3, 1), rr("none", 1.0, 100e3, 2),
               rr("mermin", 1.0, 198e3, 0), rr("mermin", 1.0, 150e3, 1),
               rr("mermin", 1.0, 210e3, 2)]
    headers, rows = bench_overhead.summarize(results)
    by_obs = {row[1]: dict(zip(headers, row, strict=True)) for row in rows}
    assert by_obs["none"]["% none"] == pytest.approx(100.0)
    assert by_obs["mermin"]["kpps"] == pytest.approx(198.0)
    assert by_obs["mermin"]["% none"] == pytest.approx(99.0)
    assert by_obs["mermin"]["cpu s/Mpkt"] == pytest.approx(0.5)
    assert by_obs["mermin"]["acc %"] == "100.000"


def test_percentile() -> None:
    assert bench_scale.percentile([], 50) is None
    assert bench_scale.percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert bench_scale.percentile([1.0, 2.0, 3.0], 99) == 3.0


def test_process_accounting_of_this_process() -> None:
    import os

    pids = bench_common.tree_pids(os.getpid())
    assert pids[0] == os.getpid()
    assert bench_common.cpu_seconds(pids) > 0
    assert bench_common.rss_mb([os.getpid()]) > 1
    assert bench_common.softirq_seconds() >= 0


# ------------------------------------------------------------------------------ real run
@pytest.mark.privileged
@pytest.mark.timeout(120)
def test_overhead_harness_real_run(require_root, bpf_object, capsys, tmp_path) -> None:
    """One second of UDP 64 B at full rate with no observer, the kernel program alone and
    the whole agent: both must count the iperf3 flow exactly, and nothing is left behind."""
    import shutil

    if shutil.which("iperf3") is None:
        pytest.fail("iperf3 is missing: scripts/setup.sh installs it")
    out_json = tmp_path / "runs.json"
    netns_dir = Path("/run/netns")
    before = set(netns_dir.glob("mb*")) if netns_dir.exists() else set()
    rc = bench_overhead.main(["--seconds", "1", "--repeat", "1", "--tests", "udp-64",
                              "--observers", "none,datapath,mermin", "--json", str(out_json)])
    assert rc == 0
    runs = {r["observer"]: r for r in json.loads(out_json.read_text())}
    assert set(runs) == {"none", "datapath", "mermin"}
    assert runs["none"]["packets"] > 1000
    for name in ("datapath", "mermin"):
        run = runs[name]
        assert run["truth"] > 1000
        assert (run["reported"], run["reported_bytes"]) == (run["truth"], run["truth_bytes"])
    assert runs["mermin"]["rss_mb"] > 10
    table = capsys.readouterr().out
    assert "udp-64" in table and "100.000" in table
    after = set(netns_dir.glob("mb*")) if netns_dir.exists() else set()
    assert not after - before  # only what this run made is checked: others may run alongside
