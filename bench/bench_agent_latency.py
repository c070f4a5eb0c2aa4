"""Report latency of the live agent: how long after a TCP connection's last packet does its
final report (flow.end_reason = end_of_flow) leave `mermin run`?

    sudo uv run python bench/bench_agent_latency.py [--connections 300] [--seconds 30] [--load]

Target (issue #4): p95 < 2 s with default settings (span.poll_interval 1 s,
span.tcp_close_linger 0.5 s). The config sets nothing in `span {}`.

Topology: two network namespaces ("pods") behind veths on a bridge in the root namespace; the
agent (a `python -m mermin.cli run` subprocess, its JSON stdout exporter read through a pipe)
is attached to both host-side veths. A client in pod A opens `--connections` short TCP
connections to a server in pod B, spread over `--seconds` with random gaps (so their phase
relative to the 1 s poll is uniform): connect, send 200 bytes, shutdown(SHUT_WR), read the
server's 100-byte reply to EOF, close. The server reads to EOF, replies and closes. The last
packet of each connection is the client's ACK of the server's FIN.

Clocks (all CLOCK_REALTIME of this machine, shared by every namespace):
- arrival: `time.time_ns()` when this script read the report's line from the agent's stdout
  (the stdout exporter writes and flushes once per report batch);
- "server" last packet: `time.time_ns()` in the server right after its `close()` returned (its
  FIN is on the wire; the client's final ACK follows within microseconds). Earliest of the
  independent clocks, so latency against it is an upper bound: the headline number;
- "client": `time.time_ns()` in the client after it read EOF (the server's FIN, which its kernel
  already ACKed) and closed; later than the last packet by the client's wake-up time;
- "report": the report's own `end_time_unix_nano` (the kernel's CLOCK_BOOTTIME stamp of the
  flow's last packet converted to wall time by the agent); printed as a cross-check of the
  agent's clock conversion, not as the measurement.

`--load` runs bench_agent_load's traffic meanwhile (10,000 active UDP flows, 2,000 new flows/s;
the agent then has span.udp_timeout 5s and flow_stats_capacity 65536, TCP settings default).

A connection whose final report arrived only in the agent's shutdown flush (SIGTERM after the
run), or never, is counted as missing/late and makes the run fail.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.helpers.netns import Topology, wait_for_port

from bench_common import REPO, free_port, machine_line
from bench_observers import parse_prometheus

__all__ = [
    "AgentRun",
    "Pods",
    "agent_config",
    "final_reports",
    "free_port",
    "latencies",
    "main",
    "make_pods",
    "parse_args",
    "parse_prometheus",
    "percentile",
    "start_agent",
    "summary",
]

PREFIX = "mab"
SERVER_PORT = 7311
TARGET_P95_S = 2.0

# ------------------------------------------------------------------------------ agent
CONFIG_TEMPLATE = """\
log_level = "{log_level}"
shutdown_timeout = "20s"

pipeline {{
  flow_capture {{
    pin_maps = false{capacity}
  }}
}}

discovery "instrument" {{
  interfaces = [{interfaces}]
}}
{span}
export "traces" {{
{export}
}}

internal "metrics" {{
  listen_address = "127.0.0.1"
  port = {metrics_port}
}}

internal "server" {{
  listen_address = "127.0.0.1"
  port = {health_port}
}}
"""

STDOUT_EXPORT = '  stdout = {\n    format = "json"\n  }'


def agent_config(interfaces: Sequence[str], metrics_port: int, health_port: int, *,
                 span: dict[str, str] | None = None, capacity: int | None = None,
                 export: str = STDOUT_EXPORT, log_level: str = "warn") -> str:
    """HCL for `mermin run`: nothing pinned, metrics/health on 127.0.0.1, `span` only with the
    keys given (empty: every span setting at its default)."""
    span_block = ""
    if span:
        body = "\n".join(f'  {k} = "{v}"' for k, v in span.items())
        span_block = f"\nspan {{\n{body}\n}}\n"
    return CONFIG_TEMPLATE.format(
        log_level=log_level,
        capacity=f"\n    flow_stats_capacity = {capacity}" if capacity else "",
        interfaces=", ".join(f'"{i}"' for i in interfaces), span=span_block, export=export,
        metrics_port=metrics_port, health_port=health_port)


@dataclass
class AgentRun:
    """A running agent subprocess whose stdout lines are handed to `on_line(arrival_ns, raw)`
    by a reader thread as soon as they are read from the pipe."""

    proc: subprocess.Popen[bytes]
    metrics_port: int
    health_port: int
    log_path: Path
    reader: threading.Thread | None = None
    stopped_at_ns: int = 0  # time.time_ns() when SIGTERM was sent
    final_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def scrape(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return parse_prometheus(resp.read().decode())

    def wait_ready(self, attached: int, timeout: float = 60.0) -> None:
        """Wait for /readyz and for `attached` interfaces (mermin_interfaces_attached)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        ready = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited ({self.proc.returncode}) at start: "
                                   f"{self.log_tail()}")
            with contextlib.suppress(OSError):
                if not ready:
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        ready = resp.status == 200
                if ready and self.scrape().get("mermin_interfaces_attached", 0) >= attached:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"agent not ready after {timeout}s: {self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        """Scrape /metrics one last time, SIGTERM (final reports flushed), wait, SIGKILL if
        needed; then wait for the reader to see EOF. Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):  # the last scrape is best effort
                self.final_metrics = self.scrape()
            self.stopped_at_ns = time.time_ns()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.reader is not None:
            self.reader.join(timeout=10)
        return self.proc.returncode


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when this script dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _read_lines(stream, on_line: Callable[[int, bytes], None]) -> None:
    for raw in iter(stream.readline, b""):
        on_line(time.time_ns(), raw)


@contextlib.contextmanager
def start_agent(config_text: str, workdir: Path, metrics_port: int, health_port: int,
                on_line: Callable[[int, bytes], None] | None, *, attached: int,
                argv_prefix: Sequence[str] = ()) -> Iterator[AgentRun]:
    """Start `mermin run` with this config, wait until it is ready and attached to `attached`
    interfaces, yield it, and always stop it (its process group is killed if SIGTERM does not
    end it). `on_line=None` sends stdout to /dev/null."""
    cfg = workdir / "mermin.hcl"
    cfg.write_text(config_text)
    log_path = workdir / "mermin.log"
    env = dict(os.environ)
    env.pop("MERMIN_CONFIG_PATH", None)
    argv = [*argv_prefix, sys.executable, "-m", "mermin.cli", "run", "--config", str(cfg)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if on_line else subprocess.DEVNULL,
                                stderr=log, cwd=REPO, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent)
    run = AgentRun(proc, metrics_port, health_port, log_path)
    try:
        if on_line is not None:
            run.reader = threading.Thread(target=_read_lines, args=(proc.stdout, on_line),
                                          daemon=True, name="agent-stdout")
            run.reader.start()
        run.wait_ready(attached)
        yield run
    finally:
        run.stop()
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------------------ topology
@dataclass
class Pods:
    """Two pods (namespaces) on a bridge; `host_ifaces` are where the agent attaches."""

    topo: Topology
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    host_ifaces: list[str]
    ip_a: str = "10.66.0.1"
    ip_b: str = "10.66.0.2"


@contextlib.contextmanager
def make_pods() -> Iterator[Pods]:
    """Build the two-pod node; everything is removed on exit (also on errors and Ctrl-C)."""
    topo = Topology(prefix=PREFIX)
    try:
        bridge = topo.bridge()
        ns_a, ns_b = topo.netns(), topo.netns()
        host_a, if_a = topo.veth(peer_ns=ns_a)
        host_b, if_b = topo.veth(peer_ns=ns_b)
        for host in (host_a, host_b):
            topo.enslave(host, bridge)
        pods = Pods(topo, ns_a, ns_b, if_a, if_b, [host_a, host_b])
        topo.addr(if_a, f"{pods.ip_a}/24", ns=ns_a)
        topo.addr(if_b, f"{pods.ip_b}/24", ns=ns_b)
        yield pods
    finally:
        topo.close()
        if topo.leftovers:
            print(f"warning: could not remove {topo.leftovers}", file=sys.stderr)


# ------------------------------------------------------------------------------ traffic
# Server: one connection at a time (the client is sequential): read to EOF, reply, close,
# then print "<client port> <time_ns after close>".
SERVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(128)
while True:
    c, peer = s.accept()
    c.settimeout(10)
    try:
        while c.recv(65536):
            pass
        c.sendall(b"r" * 100)
    except OSError:
        pass
    c.close()
    print(peer[1], time.time_ns(), flush=True)
"""

# Client: `n` connections at random gaps averaging `seconds / n`; prints per connection
# "<local port> <time_ns after EOF + close>".
CLIENT = r"""
import random, socket, sys, time
server, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seconds, seed = float(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
gap = seconds / n
at = time.monotonic()
out = []
for i in range(n):
    at += rnd.uniform(0.2 * gap, 1.8 * gap)
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    s = socket.create_connection((server, port), timeout=10)
    lport = s.getsockname()[1]
    s.sendall(b"x" * 200)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()
    out.append(f"{lport} {time.time_ns()}")
print("\n".join(out), flush=True)
"""


def run_connections(pods: Pods, n: int, seconds: float, seed: int
                    ) -> tuple[dict[int, int], dict[int, int]]:
    """Run the client against the server: ({client port: client ns}, {client port: server
    ns}). The server process is started here and killed when the topology closes."""
    server = pods.topo.spawn_in(pods.ns_b, [sys.executable, "-c", SERVER, str(SERVER_PORT)],
                                text=True)
    wait_for_port(pods.ns_b, SERVER_PORT)
    out = pods.topo.run_in(pods.ns_a, [sys.executable, "-c", CLIENT, pods.ip_b,
                                       str(SERVER_PORT), str(n), str(seconds), str(seed)],
                           timeout=seconds * 3 + 60).stdout
    client = _port_times(out)
    time.sleep(0.5)  # the server printed its last line
    server.terminate()
    srv_out, _ = server.communicate(timeout=10)
    return client, _port_times(srv_out)


def _port_times(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            out[int(parts[0])] = int(parts[1])
    return out


# ------------------------------------------------------------------------------ analysis
@dataclass(slots=True)
class Final:
    """The final report of one connection."""

    port: int  # client port
    arrival_ns: int
    end_ns: int  # report end_time_unix_nano
    end_reason: str
    reports: int  # reports of this connection in all (deltas)


def final_reports(lines: Sequence[tuple[int, bytes]], server_port: int,
                  stopped_at_ns: int = 0) -> tuple[dict[int, Final], dict[str, int]]:
    """Per client port, the last report of each connection to `server_port` that arrived
    before `stopped_at_ns` (0: no limit); and a count of every end reason seen."""
    finals: dict[int, Final] = {}
    reasons: dict[str, int] = {}
    for arrival, raw in lines:
        if not raw.startswith(b"{"):
            continue
        try:
            d = json.loads(raw)
        except ValueError:
            continue
        if d.get("destination.port") == server_port:
            port = d.get("source.port")
        elif d.get("source.port") == server_port:
            port = d.get("destination.port")
        else:
            continue
        if d.get("network.transport") not in (None, "tcp") or not isinstance(port, int):
            continue
        reason = str(d.get("flow.end_reason", ""))
        reasons[reason] = reasons.get(reason, 0) + 1
        if stopped_at_ns and arrival >= stopped_at_ns:
            continue
        prev = finals.get(port)
        count = prev.reports + 1 if prev else 1
        finals[port] = Final(port, arrival, int(d.get("end_time_unix_nano", 0)), reason, count)
    return finals, reasons


def latencies(finals: dict[int, Final], reference: dict[int, int] | None) -> list[float]:
    """Seconds from the last-packet reference to the arrival of each end_of_flow report
    (reference None: the report's own end time)."""
    out = []
    for port, f in finals.items():
        if f.end_reason != "end_of_flow":
            continue
        ref = f.end_ns if reference is None else reference.get(port)
        if ref:
            out.append((f.arrival_ns - ref) / 1e9)
    return sorted(out)


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def summary(values: Sequence[float]) -> dict[str, float | None]:
    v = sorted(values)
    return {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95),
            "p99": percentile(v, 99), "max": v[-1] if v else None}


def _fmt(s: dict[str, float | None]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:7.3f}"
    return (f"n={s['n']:<4} p50 {f(s['p50'])} s  p95 {f(s['p95'])} s  "
            f"p99 {f(s['p99'])} s  max {f(s['max'])} s")


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--seconds", type=float, default=30.0, help="spread connections over this")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--settle", type=float, default=5.0,
                   help="wait this long after the last connection before stopping the agent")
    p.add_argument("--load", action="store_true",
                   help="meanwhile run bench_agent_load's traffic (10,000 active UDP flows, "
                        "2,000 new flows/s; agent span.udp_timeout 5s, capacity 65536)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.connections < 1 or args.seconds <= 0:
        p.error("--connections must be >= 1 and --seconds > 0")
    return args


def _on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """One whole measurement; returns the results (also printed through `log`)."""
    lines: list[tuple[int, bytes]] = []
    ours = b'port":%d' % SERVER_PORT  # keep only the benchmark connections' lines

    def on_line(arrival: int, raw: bytes) -> None:
        if ours in raw:
            lines.append((arrival, raw))

    span, capacity = None, None
    if args.load:  # the load benchmark's settings: new UDP flows end after 5 s
        import bench_agent_load as load

        span, capacity = {"udp_timeout": f"{load.UDP_TIMEOUT:g}s"}, load.CAPACITY
    loaded = {}
    with tempfile.TemporaryDirectory(prefix="mab-lat-") as tmp, make_pods() as pods:
        mport, hport = free_port(), free_port()
        cfg = agent_config(pods.host_ifaces, mport, hport, span=span, capacity=capacity)
        with start_agent(cfg, Path(tmp), mport, hport, on_line, attached=2) as agent:
            if args.load:
                sender = pods.topo.spawn_in(pods.ns_a, [
                    sys.executable, "-c", load.SENDER, pods.ip_b, str(load.DST_PORT), "10000",
                    "2", "2000", str(args.seconds + args.settle + 15)], text=True)
                time.sleep(10)  # the flow population reaches its steady state
                cpu0 = load.proc_sample(agent.pid)
            client, server = run_connections(pods, args.connections, args.seconds, args.seed)
            time.sleep(args.settle)
            if args.load:
                cpu1 = load.proc_sample(agent.pid)
                loaded = {"agent_cpu_pct": (cpu1.cpu_s - cpu0.cpu_s) / (cpu1.t - cpu0.t) * 100,
                          "sender_running": sender.poll() is None}
            agent.stop()
            log_tail = agent.log_tail(1500)
            stopped = agent.stopped_at_ns
    finals, reasons = final_reports(lines, SERVER_PORT, stopped)
    eof = {p: f for p, f in finals.items() if f.end_reason == "end_of_flow"}
    res = {
        "machine": machine_line(),
        "connections": len(client),
        "server_closes": len(server),
        "final_end_of_flow": len(eof),
        "missing": len(set(client) - set(eof)),
        "end_reasons": reasons,
        "reports_per_connection_max": max((f.reports for f in finals.values()), default=0),
        "latency_vs_server_close": summary(latencies(eof, server)),
        "latency_vs_client_close": summary(latencies(eof, client)),
        "latency_vs_report_end_time": summary(latencies(eof, None)),
        "client_minus_report_end_ms": summary(
            [(client[p] - f.end_ns) / 1e6 for p, f in eof.items() if p in client]),
    }
    if loaded:
        res["background_load"] = {"active_flows": 10_000, "new_flows_per_s": 2_000, **loaded}
    p95 = res["latency_vs_server_close"]["p95"]
    res["target_p95_s"] = TARGET_P95_S
    res["pass"] = bool(p95 is not None and p95 < TARGET_P95_S and res["missing"] == 0)
    log(f"# {res['machine']}")
    if loaded:
        log(f"background load: 10,000 active UDP flows + 2,000 new/s (span.udp_timeout 5s, "
            f"capacity 65536); agent CPU {loaded['agent_cpu_pct']:.1f} %")
    log(f"connections {res['connections']}, end_of_flow reports before stop "
        f"{res['final_end_of_flow']}, missing {res['missing']}, end reasons {reasons}, "
        f"reports per connection <= {res['reports_per_connection_max']}")
    log("latency vs server close (headline): " + _fmt(res["latency_vs_server_close"]))
    log("latency vs client close           : " + _fmt(res["latency_vs_client_close"]))
    log("latency vs report end_time        : " + _fmt(res["latency_vs_report_end_time"]))
    s = res["client_minus_report_end_ms"]
    log(f"client close - report end_time    : p50 {s['p50']} ms  max {s['max']} ms")
    log(f"target p95 < {TARGET_P95_S} s: {'PASS' if res['pass'] else 'FAIL'}")
    if res["missing"]:
        log(f"agent log tail:\n{log_tail}")
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    res = run(args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything was cleaned up", file=sys.stderr)
        sys.exit(130)
