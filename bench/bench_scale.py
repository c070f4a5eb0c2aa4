"""Scale: new flows per second the agent sustains, and its memory at 100,000 active flows.

    sudo uv run python bench/bench_scale.py [--rates 500,1000,2000,4000,max] [--seconds 10]
        [--flows 100000] [--observer mermin|datapath] [--markdown]

Part 1, flows/s. A small client in the client namespace opens short TCP connections to a
server in the server namespace (handshake, then RST close: 4 packets, no TIME_WAIT), each from
its own (source address, source port) so every connection is a distinct flow. It runs at each
target rate for `--seconds` (`max`: as fast as the client processes go). With `mermin`
(poll_interval 1 s, tcp_rst_timeout 1 s: a reset connection is due 1 s after its last packet),
every connection must come back as a report while the agent runs, at most 3 s after its last
packet (rst timeout + poll interval + 1 s). Columns: connections made and per second, flows
reported live (before the agent was stopped) and in all (with its shutdown flush), missing,
lag = report read from the agent's stdout - (last packet + rst timeout) p50/p99/max, late
(lag beyond the limit, or only in the shutdown flush), agent CPU % of one core over the step,
drop counters (kernel map full, export drops). With `datapath` (kernel program only) the
flows are read from the FLOWS map instead (no lag).

Part 2, memory. One UDP datagram from each of `--flows` distinct (source address, port) pairs
(raw socket, IP_HDRINCL, addresses 10.99.128.0/17 that the server never answers), kept active;
the agent's RSS before and after it has them all in its flow table (mermin_flow_spans_active),
and the kernel FLOWS map's share (entries x (key + value) bytes, an estimate of the hash map's
memory, which is kernel memory, not RSS).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_accuracy import parse_rate
from bench_common import (
    BenchNet,
    cpu_seconds,
    format_table,
    install_stop_signals,
    machine_line,
    rss_mb,
)
from bench_observers import AgentObserver, DatapathObserver, FlowCount, Observer, make_observer

__all__ = ["CLIENT", "FLOOD", "SERVER", "ConnStep", "main", "parse_args", "percentile"]

SERVER_PORT = 7777
CLIENT_ADDRS = 32  # extra client addresses: 32 x 60,000 ports = 1.9 M distinct flows

# Accepts and closes connections as fast as it can (the kernel does the handshakes).
SERVER = r"""
import selectors, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(65535); s.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    sel.select()
    while True:
        try:
            c, _ = s.accept()
        except BlockingIOError:
            break
        c.close()
"""

# One client process: connections from (addr, port) pairs it owns, paced to `rate`/s
# (0: unpaced) for `seconds`; prints how many connected and failed.
CLIENT = r"""
import socket, struct, sys, time
server, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
addrs = sys.argv[5].split(","); first_port = int(sys.argv[6]); last_port = int(sys.argv[7])
linger = struct.pack("ii", 1, 0)
ok = failed = 0
pairs = ((a, p) for p in range(first_port, last_port) for a in addrs)
start = time.monotonic(); end = start + seconds
for n, (addr, sport) in enumerate(pairs):
    now = time.monotonic()
    if now >= end:
        break
    if rate and n % 50 == 0:
        ahead = start + n / rate - now
        if ahead > 0:
            time.sleep(ahead)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    try:
        s.bind((addr, sport)); s.connect((server, port)); ok += 1
    except OSError:
        failed += 1
    s.close()
print(ok, failed, time.monotonic() - start)
"""

# One UDP datagram from each of N (source address, port) pairs in 10.99.128.0/17, sent with a
# raw socket (IP_HDRINCL: the kernel fills in the IP checksum and length).
FLOOD = r"""
import socket, struct, sys
dst, n, dport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
d = socket.inet_aton(dst)
payload = b"mermin-bench"
for i in range(n):
    src = socket.inet_aton(f"10.99.{128 + (i >> 16)}.{(i >> 8) & 255}")
    sport = 1024 + (i & 255)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 17, 0, src, d)
    s.sendto(ip + udp, (dst, 0))
print(n)
"""


@dataclass(slots=True)
class ConnStep:
    rate: str
    connections: int
    failed: int
    per_s: float
    live: int | None  # flows reported while the agent ran (not in its shutdown flush)
    reported: int  # flows reported at all (kernel map for `datapath`)
    lateness: list[float]  # report read - (last packet + tcp_rst_timeout), seconds
    late: int
    cpu_pct: float | None
    drops: dict[str, int]

    def row(self) -> list[object]:
        d = sorted(self.lateness)
        return [self.rate, self.connections, self.failed, self.per_s, self.live,
                self.reported, self.connections - self.reported,
                percentile(d, 50), percentile(d, 99), d[-1] if d else None, self.late,
                self.cpu_pct, ", ".join(f"{k}={v}" for k, v in self.drops.items()) or "0"]


CONN_HEADERS = ["rate", "connections", "failed", "conn/s", "reported live", "reported",
                "missing", "lag p50 s", "lag p99 s", "lag max s", "late", "agent CPU %",
                "drops"]
RST_TIMEOUT = 1.0  # tcp_rst_timeout of the agent in this benchmark
POLL = 1.0  # its poll_interval
LATE = RST_TIMEOUT + POLL + 1.0  # a report later than this after the flow's last packet is late


def percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def _client_addrs(net: BenchNet) -> list[str]:
    addrs = [f"{net.subnet}.{10 + i}" for i in range(CLIENT_ADDRS)]
    for a in addrs:
        net.topo.addr(net.inner_c, f"{a}/24", ns=net.client_ns)
    return addrs


def run_clients(net: BenchNet, addrs: list[str], rate: float, seconds: float,
                port_base: int, procs: int = 2) -> tuple[int, int, float]:
    """Run `procs` client processes (addresses split between them); (ok, failed, seconds)."""
    share = [addrs[i::procs] for i in range(procs)]
    running = [net.topo.spawn_in(net.client_ns, [
        sys.executable, "-c", CLIENT, net.server_ip, str(SERVER_PORT), str(rate / procs),
        str(seconds), ",".join(share[i]), str(port_base), "65000"], text=True)
        for i in range(procs)]
    ok = failed = 0
    took = 0.0
    for p in running:
        out, err = p.communicate(timeout=seconds + 120)
        try:
            a, b, t = out.split()
        except ValueError:
            raise RuntimeError(f"client failed: {err.strip()[-500:]}") from None
        ok, failed, took = ok + int(a), failed + int(b), max(took, float(t))
    return ok, failed, took


def conn_flows(flows: list[FlowCount], server_ip: str) -> set[tuple[str, int]]:
    """Distinct client (address, port) of TCP flows to the benchmark server."""
    return {(f.src, f.sport) for f in flows
            if f.proto == 6 and f.dst == server_ip and f.dport == SERVER_PORT and f.packets}


def connection_rates(net: BenchNet, observer: str, rates: list[tuple[str, int | None]],
                     seconds: float, workdir: Path, log=print) -> list[ConnStep]:
    """Part 1: one observer instance per rate step (fresh map, fresh agent)."""
    addrs = _client_addrs(net)
    net.topo.spawn_in(net.server_ns, [sys.executable, "-c", SERVER, str(SERVER_PORT)])
    from tests.helpers.netns import wait_for_port

    wait_for_port(net.server_ns, SERVER_PORT)
    steps: list[ConnStep] = []
    port_base = 2000
    for label, pps in rates:
        wd = workdir / f"conn-{label}"
        wd.mkdir()
        obs = _make(observer, wd)
        with obs.running(net.host_ifaces):
            time.sleep(1.0)
            pids = obs.pids()
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            ok, failed, took = run_clients(net, addrs, pps or 0, seconds, port_base)
            if isinstance(obs, AgentObserver):
                _wait_reports(obs, ok, deadline=time.monotonic() + LATE + 10)
            cpu = cpu_seconds(obs.pids()) - cpu0
            wall = time.monotonic() - t0
        port_base = 2000  # a fresh observer per step: the same tuples may be reused
        step = _step(obs, net, label, ok, failed, took, cpu / wall * 100 if pids else None)
        steps.append(step)
        log("# " + "  ".join(str(c) for c in step.row()))
    return steps


def _make(observer: str, wd: Path) -> Observer:
    if observer == "mermin":
        return AgentObserver(wd, capacity=262144, record_interval="60s",
                             poll_interval=f"{POLL:g}s", timeout="60s",
                             rst_timeout=f"{RST_TIMEOUT:g}s")
    return DatapathObserver(wd, capacity=262144) if observer == "datapath" else \
        make_observer(observer, wd)


def _client_key(d: dict) -> tuple[str, int]:
    """The client end of a report of a benchmark connection, whichever side it calls source."""
    if d.get("source.port") == SERVER_PORT:
        return d.get("destination.address", ""), d.get("destination.port", 0)
    return d.get("source.address", ""), d.get("source.port", 0)


def _ours(d: dict) -> bool:
    return SERVER_PORT in (d.get("destination.port"), d.get("source.port"))


def _wait_reports(obs: AgentObserver, expected: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        seen = {_client_key(r.data) for r in list(obs.reports) if _ours(r.data)}
        if len(seen) >= expected:
            return
        time.sleep(0.5)


def _step(obs: Observer, net: BenchNet, label: str, ok: int, failed: int, took: float,
          cpu_pct: float | None) -> ConnStep:
    lateness: list[float] = []
    live = None
    if isinstance(obs, AgentObserver):
        first: dict[tuple[str, int], float] = {}  # first live report of each connection
        for r in obs.reports:
            if r.arrived >= obs.stopped_at or not _ours(r.data):
                continue
            key = _client_key(r.data)
            if key not in first:
                first[key] = r.arrived - r.data.get("end_time_unix_nano", 0) / 1e9
        live = len(first)
        lateness = [v - RST_TIMEOUT for v in first.values()]
    late = sum(1 for v in lateness if v + RST_TIMEOUT > LATE)
    if live is not None:
        late += ok - live  # not reported before the agent was stopped: late too
    reported = len(conn_flows(obs.flows or [], net.server_ip))
    return ConnStep(label, ok, failed, ok / took if took else 0.0, live, reported, lateness,
                    late, cpu_pct, {k: v for k, v in obs.drops.items() if v})


def memory_at(net: BenchNet, observer: str, flows: int, workdir: Path, log=print
              ) -> list[list[object]]:
    """Part 2: RSS before and with `flows` active flows."""
    from mermin.datapath.abi import KEY_DTYPE, VALUE_DTYPE

    wd = workdir / "memory"
    wd.mkdir()
    capacity = max(131072, 1 << (flows * 5 // 4).bit_length())
    obs: Observer = (AgentObserver(wd, capacity=capacity, record_interval="300s",
                                   poll_interval="1s", timeout="300s")
                     if observer == "mermin" else DatapathObserver(wd, capacity=capacity))
    rows: list[list[object]] = []
    with obs.running(net.host_ifaces):
        time.sleep(2.0)
        rss0 = rss_mb(obs.pids()) if obs.pids() else None
        t0 = time.monotonic()
        net.topo.run_in(net.client_ns, [sys.executable, "-c", FLOOD, net.server_ip,
                                        str(flows), "9"], timeout=300)
        sent_s = time.monotonic() - t0
        tracked = _wait_tracked(obs, flows, deadline=time.monotonic() + 60)
        rss1 = rss_mb(obs.pids()) if obs.pids() else None
    entry = KEY_DTYPE.itemsize + VALUE_DTYPE.itemsize
    kernel_mb = tracked * entry / 2**20 if tracked else None
    rows.append([observer, flows, f"{sent_s:.1f}", tracked, rss0, rss1,
                 None if rss0 is None or rss1 is None else rss1 - rss0, kernel_mb,
                 ", ".join(f"{k}={v}" for k, v in obs.drops.items() if v) or "0"])
    log("# " + "  ".join(str(c) for c in rows[-1]))
    return rows


MEM_HEADERS = ["observer", "flows sent", "send s", "flows tracked", "RSS idle MB",
               "RSS loaded MB", "delta MB", "kernel map MB (est.)", "drops"]


def _wait_tracked(obs: Observer, flows: int, deadline: float) -> int:
    tracked = 0
    while time.monotonic() < deadline:
        if isinstance(obs, AgentObserver):
            with contextlib.suppress(OSError):
                tracked = int(obs.scrape().get("mermin_flow_spans_active_total", 0))
        elif isinstance(obs, DatapathObserver):
            tracked = sum(1 for f in obs.map_counts() if f.dport == 9)
        if tracked >= flows:
            break
        time.sleep(1.0)
    time.sleep(2.0)  # a poll or two more: memory settles
    return tracked


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="500,1000,2000,4000,max",
                        help="target new connections/s, comma-separated (k suffix; max)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flows", type=int, default=100_000, help="active flows for RSS")
    parser.add_argument("--observer", default="mermin", choices=["mermin", "datapath"])
    parser.add_argument("--parts", default="rate,memory", help="rate, memory or both")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.rates = [(r, parse_rate(r)) for r in args.rates.split(",") if r]
    except ValueError as exc:
        parser.error(str(exc))
    args.parts = {p for p in args.parts.split(",") if p}
    if not args.parts <= {"rate", "memory"}:
        parser.error("--parts takes rate and/or memory")
    if not 1 <= args.flows <= 500_000:
        parser.error("--flows must be within 1..500000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_stop_signals()
    print(f"# bench_scale ({args.observer}): {machine_line()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mb-scale-") as tmp, \
            BenchNet(iperf_server=False) as net:
        if "rate" in args.parts:
            steps = connection_rates(net, args.observer, args.rates, args.seconds, Path(tmp),
                                     log=lambda s: print(s, flush=True))
            print()
            print(format_table(CONN_HEADERS, [s.row() for s in steps], markdown=args.markdown))
        if "memory" in args.parts:
            rows = memory_at(net, args.observer, args.flows, Path(tmp),
                             log=lambda s: print(s, flush=True))
            print()
            print(format_table(MEM_HEADERS, rows, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything was cleaned up", file=sys.stderr)
        sys.exit(130)
