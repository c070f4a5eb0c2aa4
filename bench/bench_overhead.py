"""Throughput overhead, cost and accuracy of mermin and of user-space peers, side by side.

    sudo uv run python bench/bench_overhead.py [--seconds 5] [--repeat 3]
        [--observers none,datapath,mermin,softflowd,fprobe,pmacctd,argus] [--tests tcp-1,...]
        [--markdown] [--json results.json]

Topology (bench/bench_common.py `BenchNet`): two network namespaces behind veth pairs on a bridge in
the root namespace (two pods on one node). iperf3 runs TCP 1 stream, TCP 8 streams and UDP
64-byte datagrams at the highest rate iperf3 reaches (`-b 0`), once per observer:

    none       nothing attached: the baseline
    datapath   mermin's kernel program alone (no agent), attached to both host-side veths
    mermin     the whole agent (`mermin run`), attached to both host-side veths
    softflowd, fprobe, pmacctd, argus   libpcap peers on the client's host-side veth

After each test, 3,000 small UDP datagrams to another port push the last packets of the test
through the libpcap peers' capture rings (see `flush_capture`) before any counts are read.

Runs are interleaved (none, datapath, mermin, peers, none, ...) `--repeat` times and the
median is reported, because the machine is shared and noisy. Columns of the summary:

    Gbit/s      iperf3's received throughput
    kpps        packets/s on the wire: TCP segments sent by both namespaces (/proc/net/snmp;
                a TSO/GSO super-packet counts as its segments), UDP datagrams through the veth
    % none      throughput ratio to the baseline (TCP: Gbit/s, UDP: packets/s sent)
    cpu s/Mpkt  user+system CPU of the observer's processes per million packets
    kernel ns/pkt   datapath only: run time of mermin's two programs per packet (kernel's
                BPF_ENABLE_STATS; a packet crosses two hooks: one counts, one dedups)
    softirq     system-wide softirq seconds during the run (baseline's shown in its own row)
    RSS MB      observer's resident memory at the end of the run
    acc %       packets the observer reported / truth: UDP = the iperf3 data flow's datagrams
                (iperf3's count + its 1 connect datagram); TCP = every TCP packet between the
                two namespaces vs the segments their TCP stacks sent during the observer's life
                (libpcap peers see one GSO super-packet per skb, so they report far fewer)
    drops       what the observer's own loss counters say it lost (kernel map full, unparsed,
                pcap drops, export gaps)

Everything it creates (namespaces, links, TCX links, processes) is removed on exit, Ctrl-C
included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    TESTS,
    UDP_OVERHEAD,
    BenchNet,
    cpu_seconds,
    flush_capture,
    format_table,
    install_stop_signals,
    link_counters,
    machine_line,
    median,
    rss_mb,
    run_iperf,
    softirq_seconds,
)
from bench_observers import (
    OBSERVERS,
    DatapathObserver,
    available,
    ensure_installed,
    make_observer,
    sum_flows,
)

__all__ = ["RunResult", "main", "measure", "parse_args", "run", "summarize"]

SETTLE = 1.0  # seconds between an observer's start and the traffic


@dataclass(slots=True)
class RunResult:
    """One iperf3 test with one observer."""

    observer: str
    test: str
    round: int
    gbps: float
    pps: float
    packets: int  # through the client veth (rx + tx) during the test
    cpu_s: float
    softirq_s: float
    rss_mb: float
    reported: int | None = None  # packets the observer reported (see `truth`)
    truth: int | None = None
    server_lost: int = 0  # UDP datagrams iperf3's server did not receive
    reported_bytes: int | None = None  # UDP only: IP bytes of the data flow
    truth_bytes: int | None = None
    prog_ns: float | None = None  # datapath: kernel program run time per packet, both hooks
    prog_runs: int | None = None
    drops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        if self.reported is None or not self.truth:
            return None
        return 100.0 * self.reported / self.truth

    @property
    def byte_accuracy(self) -> float | None:
        if self.reported_bytes is None or not self.truth_bytes:
            return None
        return 100.0 * self.reported_bytes / self.truth_bytes


def measure(net: BenchNet, observer: str, test: str, seconds: float, workdir: Path,
            round_: int = 0, rate: str | None = None) -> RunResult:
    """Start `observer`, run one iperf3 test, stop it, return what was measured."""
    obs = make_observer(observer, workdir)
    tcp = not test.startswith("udp")
    seg_life0 = net.tcp_segments() if tcp else 0
    with obs.running(net.host_ifaces):
        time.sleep(SETTLE)
        pids = obs.pids()
        seg0 = net.tcp_segments() if tcp else 0
        stats0 = obs.run_stats() if isinstance(obs, DatapathObserver) else None
        cpu0, irq0, c0 = cpu_seconds(pids), softirq_seconds(), link_counters(net.host_c)
        ip = run_iperf(net, test, seconds, rate)
        c1, irq1 = link_counters(net.host_c), softirq_seconds()
        stats1 = obs.run_stats() if isinstance(obs, DatapathObserver) else None
        seg1 = net.tcp_segments() if tcp else 0
        pids = obs.pids()
        cpu1, rss = cpu_seconds(pids), rss_mb(pids)
        flush_capture(net)
    # packets on the wire: TCP segments (a GSO super-packet is one skb but many segments),
    # UDP datagrams as the veth counted them
    packets = seg1 - seg0 if tcp else (c1 - c0).packets
    result = RunResult(
        observer=observer, test=test, round=round_, gbps=ip.gbps,
        pps=packets / ip.seconds if ip.seconds else 0.0, packets=packets,
        server_lost=ip.lost_packets, cpu_s=max(0.0, cpu1 - cpu0), softirq_s=irq1 - irq0, rss_mb=rss,
        drops={k: v for k, v in obs.drops.items() if v}, notes=list(obs.notes),
    )
    if stats0 and stats1 and packets:
        result.prog_ns = (stats1[0] - stats0[0]) / packets
        result.prog_runs = stats1[1] - stats0[1]
    if obs.flows is not None:
        if test.startswith("udp"):
            # iperf3 also sends one 4-byte connect datagram per stream
            result.truth = ip.packets_sent + len(ip.ports)
            result.truth_bytes = (ip.bytes_sent + ip.packets_sent * UDP_OVERHEAD
                                  + len(ip.ports) * (4 + UDP_OVERHEAD))
            sums = [sum_flows(obs.flows, net.client_ip, port, net.server_ip, 5201, 17)
                    for port in ip.ports]
            result.reported = sum(p for p, _ in sums)
            result.reported_bytes = sum(b for _, b in sums)
        else:
            result.truth = net.tcp_segments() - seg_life0
            ends = {net.client_ip, net.server_ip}
            result.reported = sum(f.packets for f in obs.flows
                                  if f.src in ends and f.dst in ends and f.proto == 6)
    return result


def run(seconds: float, repeat: int, observers: list[str], tests: list[str],
        workdir: Path, log=print) -> list[RunResult]:
    """Interleaved rounds: for each round, each test, each observer in order."""
    results: list[RunResult] = []
    with BenchNet() as net:
        for round_ in range(repeat):
            for test in tests:
                for name in observers:
                    wd = workdir / f"{name}-{test}-{round_}"
                    wd.mkdir(parents=True, exist_ok=True)
                    try:
                        r = measure(net, name, test, seconds, wd, round_)
                    except RuntimeError as exc:
                        log(f"# {name} {test} round {round_}: failed: {exc}")
                        continue
                    results.append(r)
                    acc = "" if r.accuracy is None else f" acc {r.accuracy:.3f}%"
                    log(f"# round {round_} {test:6} {name:9} {r.gbps:6.2f} Gbit/s "
                        f"{r.pps / 1e3:7.1f} kpps cpu {r.cpu_s:5.2f}s "
                        f"softirq {r.softirq_s:5.2f}s rss {r.rss_mb:6.1f} MB{acc}"
                        f"{' drops ' + str(r.drops) if r.drops else ''}")
    return results


def summarize(results: list[RunResult]) -> tuple[list[str], list[list[object]]]:
    """Median per (test, observer), in first-seen order; ratios against `none`."""
    headers = ["test", "observer", "runs", "Gbit/s", "kpps", "% none", "cpu s/Mpkt",
               "kernel ns/pkt", "softirq s", "RSS MB", "acc %", "drops"]
    keys: list[tuple[str, str]] = []
    for r in results:
        if (r.test, r.observer) not in keys:
            keys.append((r.test, r.observer))
    keys.sort(key=lambda k: TESTS.index(k[0]) if k[0] in TESTS else 99)
    rows: list[list[object]] = []
    for test, obs in keys:
        group = [r for r in results if r.test == test and r.observer == obs]
        base = [r for r in results if r.test == test and r.observer == "none"]
        gbps, pps = median([r.gbps for r in group]), median([r.pps for r in group])
        if test.startswith("udp"):
            b = median([r.pps for r in base])
            ratio = 100.0 * pps / b if b else None
        else:
            b = median([r.gbps for r in base])
            ratio = 100.0 * gbps / b if b else None
        per_m = median([r.cpu_s / (r.packets / 1e6) for r in group if r.packets])
        user = obs not in ("none", "datapath")
        accs = [r.accuracy for r in group if r.accuracy is not None]
        drops: dict[str, int] = {}
        for r in group:
            for k, v in r.drops.items():
                drops[k] = drops.get(k, 0) + v
        rows.append([
            test, obs, len(group), gbps, pps / 1e3, ratio,
            per_m if user else None,
            median([r.prog_ns for r in group if r.prog_ns is not None]) or None,
            median([r.softirq_s for r in group]),
            median([r.rss_mb for r in group]) if user else None,
            f"{min(accs):.3f}" if accs else None,
            ", ".join(f"{k}={v}" for k, v in drops.items()) or ("0" if accs else None),
        ])
    return headers, rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 duration per run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--observers", default=",".join(OBSERVERS),
                        help="comma-separated, from: " + ", ".join(OBSERVERS))
    parser.add_argument("--tests", default=",".join(TESTS),
                        help="comma-separated, from: " + ", ".join(TESTS))
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--json", type=Path, help="also write every run to this JSON file")
    args = parser.parse_args(argv)
    args.observers = [o for o in args.observers.split(",") if o]
    args.tests = [t for t in args.tests.split(",") if t]
    for o in args.observers:
        if o not in OBSERVERS:
            parser.error(f"unknown observer {o!r}; choose from {', '.join(OBSERVERS)}")
    for t in args.tests:
        if t not in TESTS:
            parser.error(f"unknown test {t!r}; choose from {', '.join(TESTS)}")
    if args.seconds <= 0 or args.repeat < 1:
        parser.error("--seconds must be > 0 and --repeat >= 1")
    if "none" not in args.observers:
        args.observers.insert(0, "none")  # ratios need the baseline
    return args


def select_observers(names: list[str], log=print) -> list[str]:
    """Install missing peers, then keep the observers that can run here (say why not)."""
    ensure_installed(names)
    kept = []
    for name in names:
        why = available(name)
        if why:
            log(f"# skipping {name}: {why}")
        else:
            kept.append(name)
    return kept


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_stop_signals()
    observers = select_observers(args.observers)
    print(f"# bench_overhead: {machine_line()}")
    print(f"# {args.seconds:g}s per run, {args.repeat} interleaved round(s); observers: "
          f"{', '.join(observers)}; tests: {', '.join(args.tests)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mb-overhead-") as tmp:
        results = run(args.seconds, args.repeat, observers, args.tests, Path(tmp),
                      log=lambda s: print(s, flush=True))
    headers, rows = summarize(results)
    print()
    print(format_table(headers, rows, markdown=args.markdown))
    notes = sorted({n for r in results for n in r.notes})
    for n in notes:
        print(f"note: {n}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything was cleaned up", file=sys.stderr)
        sys.exit(130)
