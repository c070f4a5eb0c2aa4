"""Load: the live agent's CPU and memory with 10,000 active flows and 2,000 new flows/s.

    sudo uv run python bench/bench_agent_load.py [--active 10000] [--new-rate 2000]
        [--active-period 2] [--ramp 0] [--udp-timeout 5] [--warmup 15] [--seconds 45]
        [--exporter stdout|devnull|otlp] [--profile none|cprofile|tracemalloc] [--json FILE]

Target (issue #4): under 15 % of one core and under 150 MB RSS.

Topology: two network namespaces ("pods") behind veths on a bridge; the agent (`python -m
mermin.cli run`, a direct child of this script) is attached to both host-side veths, so every
packet crosses two watched hooks (ingress of the client's veth, egress of the server's).

Traffic: one sender process in pod A writes UDP datagrams (36-byte IP packets) to pod B
through a raw socket (IP_HDRINCL, source addresses that exist nowhere: pod B cannot answer,
so the flows are one-way and nothing else shows up). Paced in 10 ms ticks:
- `--active` long-lived flows (10 source addresses x 1,000 ports), each sent one datagram
  every `--active-period` s (default 2 s, below the 5 s udp_timeout: they stay active), all
  started at once (their `max_record_interval` reports then fall due together every 60 s: the
  worst case) or evenly over `--ramp` seconds (60: the steady state of real traffic);
- `--new-rate` new flows per second (source addresses 10.202.x.x, each (address, port) used
  once), one datagram each, then silent: each ends by idle timeout.

Agent settings: defaults, except `span.udp_timeout = "5s"` (so a new flow ends 5-6 s after its
datagram and the population stays bounded: about active + new_rate x (udp_timeout +
poll_interval) = 22,000 flows) and `pipeline.flow_capture.flow_stats_capacity = 65536` (the
default 16,384 entries cannot hold 22,000 flows; the map's share of memory is kernel memory,
not the agent's RSS). Exporter: `stdout` (JSON, read through a pipe by a thread here that counts
lines and parses the new flows' reports), `devnull` (JSON stdout to /dev/null: the same
encoding cost, no reader), or `otlp` (OTLP/gRPC, gzip, to a counting receiver in a separate
process on 127.0.0.1).

Measured over `--seconds` after `--warmup`: agent CPU (utime + stime of all its threads from
/proc/PID/stat, delta / wall, % of one core), RSS (VmRSS sampled every second: max and at the
end; VmHWM), reports/s out, kernel FLOWS entries, and every loss counter the agent
exposes (kernel map_full, export drops). After the sender stops it waits udp_timeout + 4 s and
checks that every new flow sent came out as a report (stdout mode).

Profiling a run: `--profile cprofile` runs the agent under a cProfile per thread and prints
the top functions by cumulative and own time;
`--profile tracemalloc` runs it with tracemalloc and prints the allocation sites that grew
during the measurement window (both slow the agent down: their CPU numbers do not count).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_agent_latency import (
    STDOUT_EXPORT,
    Pods,
    agent_config,
    free_port,
    machine_line,
    make_pods,
    start_agent,
)

__all__ = [
    "CLK_TCK",
    "LineCounter",
    "ProcSample",
    "agent_losses",
    "main",
    "measure",
    "metric_sum",
    "parse_args",
    "proc_sample",
    "rss_points",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_CPU_PCT = 15.0
TARGET_RSS_MB = 150.0
DST_PORT = 7400
UDP_TIMEOUT = 5.0
CAPACITY = 65536

# The sender. Active flow i: source 10.201.0.0 + i // 1000, port 30000 + i % 1000. New flow j:
# source 10.202.0.0 + j // 50000, port 10000 + j % 50000. With a ramp, active flow i starts at
# i * ramp / active s (spreads their max_record_interval reports). Prints "<active pkts> <new
# flows> <seconds>" at the end (also when terminated).
SENDER = r"""
import signal, socket, struct, sys, time
dst, dport = sys.argv[1], int(sys.argv[2])
active, period = int(sys.argv[3]), float(sys.argv[4])
new_rate, seconds = float(sys.argv[5]), float(sys.argv[6])
ramp = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
stop = False
def _stop(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, _stop)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
d = socket.inet_aton(dst)
payload = b"mab-load"
def pkt(src, sport):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 17, 0, src.to_bytes(4, "big"), d)
    return ip + udp
A, N = (10 << 24) | (201 << 16), (10 << 24) | (202 << 16)
act = [pkt(A + i // 1000, 30000 + i % 1000) for i in range(active)]
addr = (dst, 0)
send = s.sendto
sent_a = sent_n = pkts_a = 0
started = active if ramp <= 0 else 0
start = time.monotonic()
while not stop:
    el = time.monotonic() - start
    if el >= seconds:
        break
    if started < active:
        upto = min(active, int(el * active / ramp) + 1)
        for i in range(started, upto):
            send(act[i], addr)
        pkts_a += upto - started
        started = upto
    due_a = int(el * active / period) - sent_a
    for k in range(sent_a, sent_a + due_a):
        if k % active < started:
            send(act[k % active], addr)
            pkts_a += 1
    sent_a += max(0, due_a)
    due_n = int(el * new_rate) - sent_n
    for j in range(sent_n, sent_n + due_n):
        send(pkt(N + j // 50000, 10000 + j % 50000), addr)
    sent_n += max(0, due_n)
    time.sleep(0.01)
print(pkts_a, sent_n, time.monotonic() - start, flush=True)
"""

# Counting OTLP/gRPC receiver: prints its port, then answers each stdin line with the number
# of spans received so far.
RECEIVER = r"""
import sys, threading
from concurrent import futures
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg
count = [0, 0]
lock = threading.Lock()
class S(tsg.TraceServiceServicer):
    def Export(self, req, ctx):
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with lock:
            count[0] += n
            count[1] += 1
        return ts.ExportTraceServiceResponse()
server = grpc.server(futures.ThreadPoolExecutor(4))
tsg.add_TraceServiceServicer_to_server(S(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
for _ in sys.stdin:
    print(count[0], count[1], flush=True)
server.stop(0)
"""

# Runs the agent with a cProfile per thread (main thread and every thread started later);
# writes one merged stats file at exit. argv: OUT, then mermin's argv.
CPROFILE_WRAPPER = r"""
import cProfile, pstats, sys, threading
out = sys.argv[1]
sys.argv = ["mermin", *sys.argv[sys.argv.index("mermin.cli") + 1:]]
profiles = []
_orig = threading.Thread.run
def _run(self):
    p = cProfile.Profile()
    profiles.append(p)
    p.enable()
    try:
        _orig(self)
    finally:
        p.disable()
threading.Thread.run = _run
from mermin.cli import main
main_prof = cProfile.Profile()
profiles.append(main_prof)
main_prof.enable()
try:
    rc = main()
finally:
    main_prof.disable()
    stats = None
    for p in profiles:
        p.create_stats()
        if p.stats:
            stats = pstats.Stats(p) if stats is None else stats.add(p)
    if stats is not None:
        stats.dump_stats(out)
sys.exit(rc)
"""


# Runs the agent with tracemalloc on; each SIGUSR1 takes a snapshot and appends to OUT the
# allocation sites that grew most since the previous one. argv: OUT, then mermin's argv.
TRACEMALLOC_WRAPPER = r"""
import signal, sys, tracemalloc
out = sys.argv[1]
sys.argv = ["mermin", *sys.argv[sys.argv.index("mermin.cli") + 1:]]
tracemalloc.start(1)
last = [None]
def _snap(*_):
    skip = tracemalloc.Filter(False, tracemalloc.__file__)
    snap = tracemalloc.take_snapshot().filter_traces([skip])
    cur, peak = tracemalloc.get_traced_memory()
    with open(out, "a") as f:
        f.write(f"== traced {cur / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB)\n")
        if last[0] is not None:
            for st in snap.compare_to(last[0], "lineno")[:25]:
                f.write(f"  {st}\n")
        else:
            for st in snap.statistics("lineno")[:25]:
                f.write(f"  {st}\n")
    last[0] = snap
signal.signal(signal.SIGUSR1, _snap)
from mermin.cli import main
sys.exit(main())
"""


# ------------------------------------------------------------------------------ accounting
@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU seconds (user + system, all threads), VmRSS and VmHWM (MiB) of one process."""

    t: float
    cpu_s: float
    rss_mb: float
    hwm_mb: float


def proc_sample(pid: int) -> ProcSample:
    t = time.monotonic()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return ProcSample(t, cpu, rss / 1024, hwm / 1024)


def metric_sum(metrics: dict[str, float], name: str, where: str = "") -> float:
    """Sum of every series of `name` (any labels) whose label text contains `where`."""
    total = 0.0
    for key, value in metrics.items():
        base, _, labels = key.partition("{")
        if base == name and where in labels:
            total += value
    return total


def agent_losses(metrics: dict[str, float]) -> dict[str, int]:
    """The agent's loss counters that are not zero: kernel map full, export drops, unparsed
    packets, untracked fragments, flows lost at shutdown."""
    out = {}
    for key, value in metrics.items():
        base = key.partition("{")[0]
        if not value or base.endswith("_created"):
            continue
        if base in ("mermin_ebpf_map_full", "mermin_ebpf_map_full_total",
                    "mermin_export_dropped_total", "mermin_ebpf_fragments_untracked",
                    "mermin_ebpf_fragments_untracked_total") or (
                base.startswith("mermin_ebpf_unparsed") and "ethertype" not in key):
            out[key] = int(value)
    return out


class LineCounter:
    """Consumes the agent's stdout lines: counts them, and keeps the (address, port) of the
    benchmark's new flows (source 10.202.x.x) that came out in a report."""

    def __init__(self) -> None:
        self.lines = 0
        self.new_flows: set[tuple[str, int]] = set()
        self.reasons: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, _arrival_ns: int, raw: bytes) -> None:
        self.lines += 1
        if b'"10.202.' not in raw:
            return
        with contextlib.suppress(ValueError):
            d = json.loads(raw)
            if str(d.get("source.address", "")).startswith("10.202."):
                key = (d["source.address"], d.get("source.port", 0))
            else:
                key = (d.get("destination.address", ""), d.get("destination.port", 0))
            reason = str(d.get("flow.end_reason", ""))
            with self.lock:
                self.new_flows.add(key)
                self.reasons[reason] = self.reasons.get(reason, 0) + 1


@dataclass
class Receiver:
    """The counting OTLP receiver subprocess."""

    proc: subprocess.Popen[str]
    port: int

    def spans(self) -> tuple[int, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        spans, requests = self.proc.stdout.readline().split()
        return int(spans), int(requests)


@contextlib.contextmanager
def otlp_receiver():
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        yield Receiver(proc, int(proc.stdout.readline()))
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------------------ run
@dataclass
class Result:
    settings: dict
    machine: str
    cpu_pct: float = 0.0
    rss_idle_mb: float = 0.0  # before any traffic
    rss_max_mb: float = 0.0
    rss_end_mb: float = 0.0
    hwm_mb: float = 0.0
    rss_series: list = field(default_factory=list)  # MiB, every second of the window
    reports_per_s: float = 0.0
    flows_in_map: float = 0.0
    spans_active: float = 0.0
    sender: dict = field(default_factory=dict)
    sender_cpu_pct: float = 0.0
    new_flows_sent: int = 0
    new_flows_reported: int | None = None
    otlp_spans: int | None = None
    exported: float = 0.0
    losses: dict = field(default_factory=dict)
    end_reasons: dict = field(default_factory=dict)
    profile: str = ""

    @property
    def passed(self) -> bool:
        complete = self.new_flows_reported is None or self.new_flows_reported >= self.new_flows_sent
        return (self.cpu_pct < TARGET_CPU_PCT and self.rss_max_mb < TARGET_RSS_MB
                and not self.losses and complete)


def _export_block(exporter: str, otlp_port: int | None) -> str:
    if exporter == "otlp":
        return (f'  otlp = {{\n    endpoint = "http://127.0.0.1:{otlp_port}"\n'
                '    protocol = "grpc"\n  }')
    return STDOUT_EXPORT


def measure(args: argparse.Namespace, pods: Pods, workdir: Path, log: Callable[[str], None],
            receiver: Receiver | None) -> Result:
    res = Result(settings={k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()}, machine=machine_line())
    counter = LineCounter() if args.exporter == "stdout" else None
    mport, hport = free_port(), free_port()
    cfg = agent_config(pods.host_ifaces, mport, hport,
                       span={"udp_timeout": f"{args.udp_timeout:g}s"}, capacity=CAPACITY,
                       export=_export_block(args.exporter, receiver and receiver.port))
    prefix: list[str] = []
    prof_out = workdir / "agent.prof"
    if args.profile in ("cprofile", "tracemalloc"):
        wrapper = workdir / "wrapper.py"
        wrapper.write_text(CPROFILE_WRAPPER if args.profile == "cprofile"
                           else TRACEMALLOC_WRAPPER)
        prefix = [sys.executable, str(wrapper), str(prof_out), "--"]
    with start_agent(cfg, workdir, mport, hport, counter, attached=2,
                     argv_prefix=prefix) as agent:
        total = args.warmup + args.seconds
        idle = proc_sample(agent.pid)
        res.rss_idle_mb = idle.rss_mb
        # the sender runs a little past the window, so it is still there to be sampled
        sender = pods.topo.spawn_in(pods.ns_a, [
            sys.executable, "-c", SENDER, pods.ip_b, str(DST_PORT), str(args.active),
            str(args.active_period), str(args.new_rate), str(total + 2.0), str(args.ramp)],
            text=True)
        t_start = time.monotonic()
        time.sleep(args.warmup)
        m0, s0 = agent.scrape(), proc_sample(agent.pid)
        if args.profile == "tracemalloc":
            os.kill(agent.pid, signal.SIGUSR1)
        snd0 = proc_sample(sender.pid)
        lines0 = counter.lines if counter else 0
        spans0 = receiver.spans()[0] if receiver else 0
        rss_max, hwm = s0.rss_mb, s0.hwm_mb
        while time.monotonic() < t_start + total:
            time.sleep(1.0)
            s = proc_sample(agent.pid)
            res.rss_series.append(round(s.rss_mb, 1))
            rss_max = max(rss_max, s.rss_mb)
            hwm = s.hwm_mb
            if sender.poll() is not None:
                break
        m1, s1 = agent.scrape(), proc_sample(agent.pid)
        if args.profile == "tracemalloc":
            os.kill(agent.pid, signal.SIGUSR1)
            time.sleep(3.0)
        with contextlib.suppress(OSError):
            snd1 = proc_sample(sender.pid)
            res.sender_cpu_pct = (snd1.cpu_s - snd0.cpu_s) / (snd1.t - snd0.t) * 100
        lines1 = counter.lines if counter else 0
        spans1 = receiver.spans()[0] if receiver else 0
        wall = s1.t - s0.t
        res.cpu_pct = (s1.cpu_s - s0.cpu_s) / wall * 100
        res.rss_max_mb, res.rss_end_mb, res.hwm_mb = rss_max, s1.rss_mb, hwm
        res.reports_per_s = (metric_sum(m1, "mermin_export_flow_spans_total")
                             - metric_sum(m0, "mermin_export_flow_spans_total")) / wall
        if counter:
            res.reports_per_s = (lines1 - lines0) / wall
        if receiver:
            res.reports_per_s = (spans1 - spans0) / wall
        res.flows_in_map = metric_sum(m1, "mermin_ebpf_map_size", "FLOWS")
        res.spans_active = metric_sum(m1, "mermin_flow_spans_active_total")
        out, _ = sender.communicate(timeout=30)
        parts = out.split()
        if len(parts) == 3:
            res.sender = {"active_packets": int(parts[0]), "new_flows": int(parts[1]),
                          "seconds": float(parts[2])}
            res.new_flows_sent = int(parts[1])
        # every new flow ends by idle timeout: wait for the last ones' reports
        time.sleep(args.udp_timeout + 4.0)
        m2 = agent.scrape()
        res.exported = metric_sum(m2, "mermin_export_flow_spans_total")
        res.losses = agent_losses(m2)
        if receiver:
            res.otlp_spans = receiver.spans()[0]
        if counter:
            with counter.lock:
                res.new_flows_reported = len(counter.new_flows)
                res.end_reasons = dict(counter.reasons)
        log(f"# agent log tail: {agent.log_tail(600).strip()[-600:]!r}")
    if args.profile == "cprofile" and prof_out.exists():
        res.profile = _cprofile_top(prof_out)
    elif args.profile == "tracemalloc" and prof_out.exists():
        res.profile = prof_out.read_text()
    return res


def _cprofile_top(path: Path, top: int = 30) -> str:
    import io

    buf = io.StringIO()
    st = pstats.Stats(str(path), stream=buf)
    st.sort_stats("cumulative").print_stats(top)
    st.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--active", type=int, default=10_000, help="long-lived active flows")
    p.add_argument("--active-period", type=float, default=2.0,
                   help="seconds between two datagrams of one active flow (< --udp-timeout)")
    p.add_argument("--new-rate", type=float, default=2000.0, help="new flows per second")
    p.add_argument("--udp-timeout", type=float, default=UDP_TIMEOUT,
                   help="span.udp_timeout of the agent, seconds: how long a new flow lives")
    p.add_argument("--ramp", type=float, default=0.0,
                   help="start the active flows evenly over this many seconds (60: their "
                        "max_record_interval reports spread out; 0: all at once, the worst "
                        "case: 10,000 periodic reports every 60 s in two or three polls)")
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--seconds", type=float, default=45.0, help="measurement window")
    p.add_argument("--exporter", choices=["stdout", "devnull", "otlp"], default="stdout")
    p.add_argument("--profile", default="none",
                   choices=["none", "cprofile", "tracemalloc"])
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if not 1 <= args.active <= 50_000:
        p.error("--active must be within 1..50000")
    if args.udp_timeout <= 0:
        p.error("--udp-timeout must be > 0")
    if not 0 < args.active_period < args.udp_timeout:
        p.error(f"--active-period must be within 0..{args.udp_timeout:g} s (--udp-timeout)")
    if not 0 <= args.new_rate <= 20_000:
        p.error("--new-rate must be within 0..20000")
    if args.seconds <= 0 or args.warmup < 0 or args.ramp < 0:
        p.error("--seconds must be > 0 and --warmup >= 0")
    return args


def report(res: Result, log: Callable[[str], None] = print) -> None:
    s = res.settings
    log(f"# {res.machine}")
    log(f"# {s['active']} active flows (1 datagram / {s['active_period']:g} s each, started "
        f"over {s['ramp']:g} s), "
        f"{s['new_rate']:g} new flows/s, exporter {s['exporter']}, warmup {s['warmup']:g} s, "
        f"measured {s['seconds']:g} s; span.udp_timeout {s['udp_timeout']:g}s, "
        f"flow_stats_capacity {CAPACITY}")
    log(f"agent CPU            {res.cpu_pct:6.1f} % of one core   (target < {TARGET_CPU_PCT:g})")
    log(f"agent RSS max / end  {res.rss_max_mb:6.1f} / {res.rss_end_mb:.1f} MiB, VmHWM "
        f"{res.hwm_mb:.1f} MiB, idle before traffic {res.rss_idle_mb:.1f} MiB   "
        f"(target < {TARGET_RSS_MB:g})")
    if res.rss_series:
        q = res.rss_series
        log(f"agent RSS over window {rss_points(q)}")
    log(f"reports out          {res.reports_per_s:8.0f} /s")
    log(f"flows in kernel map  {res.flows_in_map:8.0f}   (spans active in the table "
        f"{res.spans_active:.0f})")
    log(f"sender               {res.sender}  CPU {res.sender_cpu_pct:.1f} %")
    if res.new_flows_reported is not None:
        log(f"new flows reported   {res.new_flows_reported} of {res.new_flows_sent} sent; end "
            f"reasons {res.end_reasons}")
    if res.otlp_spans is not None:
        log(f"OTLP spans received  {res.otlp_spans} (agent exported {res.exported:.0f})")
    log(f"losses               {res.losses or 'none'}")
    log(f"targets: {'PASS' if res.passed else 'FAIL'}")
    if res.profile:
        log("profile:\n" + res.profile)


def rss_points(series: list) -> str:
    """RSS at the window's start, quarter points and end: shows whether it still grows."""
    n = len(series)
    picks = sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})
    return " -> ".join(f"{series[i]:.1f}" for i in picks) + " MiB"


def _on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    with tempfile.TemporaryDirectory(prefix="mab-load-") as tmp, make_pods() as pods, \
            (otlp_receiver() if args.exporter == "otlp" else contextlib.nullcontext()) as rcv:
        res = measure(args, pods, Path(tmp), print, rcv)
    report(res)
    if args.json:
        args.json.write_text(json.dumps({**res.__dict__, "passed": res.passed}, indent=2))
    return 0 if res.passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything was cleaned up", file=sys.stderr)
        sys.exit(130)
