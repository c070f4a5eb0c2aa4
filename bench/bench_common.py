"""Shared pieces of the traffic benchmarks (bench_overhead, bench_accuracy, bench_scale).

- `BenchNet`: two network namespaces ("client", "server") behind veth pairs on a bridge in the
  root namespace (the shape of two pods on one node), with an `iperf3 -s` in the server; all of
  it removed on exit (also on Ctrl-C / SIGTERM, see `install_stop_signals`).
- `run_iperf`: one iperf3 test (tcp-1, tcp-8, udp-64 at a given rate) -> `IperfResult`.
- process and system accounting: CPU seconds of a process tree, RSS, softirq time,
  interface counters.
- `format_table`: aligned text tables for the results.

Nothing here does per-packet work in Python: traffic comes from iperf3 or from the small
generators of bench_scale, counts come from kernel counters and observers' own reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "src")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from tests.helpers.netns import Topology, wait_for_port  # noqa: E402

__all__ = [
    "CLK_TCK",
    "REPO",
    "TESTS",
    "UDP_OVERHEAD",
    "BenchNet",
    "IperfResult",
    "LinkCounters",
    "cpu_seconds",
    "flush_capture",
    "format_table",
    "free_port",
    "install_stop_signals",
    "link_counters",
    "machine_line",
    "median",
    "rss_mb",
    "run_iperf",
    "softirq_seconds",
    "tcp_segments",
    "tree_pids",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
TESTS = ("tcp-1", "tcp-8", "udp-64")
IPERF_PORT = 5201
UDP_OVERHEAD = 28  # IPv4 + UDP headers: iperf3 counts payload, observers count IP bytes


# ------------------------------------------------------------------------------ accounting
def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes (all their threads)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_mb(pids: Sequence[int]) -> float:
    """Resident set size of these processes, MiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def softirq_seconds() -> float:
    """System-wide softirq time (all CPUs), seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[7]) / CLK_TCK


@dataclass(frozen=True, slots=True)
class LinkCounters:
    rx_packets: int = 0
    tx_packets: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0

    def __sub__(self, other: LinkCounters) -> LinkCounters:
        return LinkCounters(*(a - b for a, b in zip(_astuple(self), _astuple(other), strict=True)))

    @property
    def packets(self) -> int:
        return self.rx_packets + self.tx_packets


def _astuple(c: LinkCounters) -> tuple[int, ...]:
    return (c.rx_packets, c.tx_packets, c.rx_bytes, c.tx_bytes, c.rx_dropped, c.tx_dropped)


def link_counters(name: str, ns: str | None = None) -> LinkCounters:
    """Kernel statistics of an interface (root namespace, or `ns` via `ip netns exec`)."""
    keys = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")
    if ns is None:
        base = Path(f"/sys/class/net/{name}/statistics")
        return LinkCounters(*(int((base / k).read_text()) for k in keys))
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c",
         " ".join(f"cat /sys/class/net/{name}/statistics/{k};" for k in keys)],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout.split()
    return LinkCounters(*(int(v) for v in out))


def tcp_segments(ns: str) -> int:
    """TCP segments sent by namespace `ns` (TcpOutSegs + TcpRetransSegs of /proc/net/snmp).

    The kernel counts these per wire segment (a TSO/GSO super-packet adds its segment count),
    so summed over both ends of a connection it is the ground truth for TCP packets.
    """
    text = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
                          capture_output=True, text=True, check=True, timeout=10).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("Tcp:")]
    stats = dict(zip(lines[0][1:], lines[1][1:], strict=True))
    return int(stats["OutSegs"]) + int(stats["RetransSegs"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def machine_line() -> str:
    """One line describing the machine the numbers come from."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; kernel "
            f"{os.uname().release}; {os.cpu_count()} x {model}; load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")


# ------------------------------------------------------------------------------ signals
def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_stop_signals() -> None:
    """SIGTERM/SIGHUP behave like Ctrl-C, so every `finally` runs and cleans up."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)


# ------------------------------------------------------------------------------ topology
@dataclass
class BenchNet:
    """Client and server namespaces behind veths on a root-namespace bridge.

    `host_c`/`host_s` are the root-side veth ends (where observers attach); `inner_c`/
    `inner_s` the ends inside the namespaces. `with BenchNet() as net:` builds it and starts
    `iperf3 -s`; leaving the block removes namespaces, links and processes.
    """

    prefix: str = "mb"
    subnet: str = "10.99.0"
    iperf_server: bool = True
    topo: Topology = field(init=False)
    client_ns: str = field(init=False, default="")
    server_ns: str = field(init=False, default="")
    host_c: str = field(init=False, default="")
    host_s: str = field(init=False, default="")
    inner_c: str = field(init=False, default="")
    inner_s: str = field(init=False, default="")

    @property
    def client_ip(self) -> str:
        return f"{self.subnet}.1"

    @property
    def server_ip(self) -> str:
        return f"{self.subnet}.2"

    @property
    def host_ifaces(self) -> list[str]:
        return [self.host_c, self.host_s]

    def tcp_segments(self) -> int:
        """TCP segments sent by the client and the server namespaces, together."""
        return tcp_segments(self.client_ns) + tcp_segments(self.server_ns)

    def __enter__(self) -> BenchNet:
        self.topo = Topology(prefix=self.prefix)
        try:
            bridge = self.topo.bridge()
            self.client_ns, self.server_ns = self.topo.netns(), self.topo.netns()
            self.host_c, self.inner_c = self.topo.veth(peer_ns=self.client_ns)
            self.host_s, self.inner_s = self.topo.veth(peer_ns=self.server_ns)
            for host in (self.host_c, self.host_s):
                self.topo.enslave(host, bridge)
            self.topo.addr(self.inner_c, f"{self.client_ip}/24", ns=self.client_ns)
            self.topo.addr(self.inner_s, f"{self.server_ip}/24", ns=self.server_ns)
            if self.iperf_server:
                self.topo.spawn_in(self.server_ns, ["iperf3", "-s"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_for_port(self.server_ns, IPERF_PORT)
        except BaseException:
            self.topo.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.topo.close()
        if self.topo.leftovers:
            print(f"warning: could not remove {self.topo.leftovers}", file=sys.stderr)


# ------------------------------------------------------------------------------ flushing
_FLUSH = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"flush", (sys.argv[1], 9))
"""


def flush_capture(net: BenchNet, packets: int = 3000) -> None:
    """Send `packets` small UDP datagrams to the server's discard port (another flow).

    libpcap reads a TPACKET_V3 ring block by block; the block holding the last packets of a
    test is handed to the reader only once it fills (or a timer retires it), so a peer that
    is stopped right after the test would miss them. This pushes them through for every
    observer alike before the counts are read.
    """
    net.topo.run_in(net.client_ns, [sys.executable, "-c", _FLUSH, net.server_ip,
                                    str(packets)], timeout=60)
    time.sleep(0.5)


# ------------------------------------------------------------------------------ iperf3
@dataclass(slots=True)
class IperfResult:
    """What iperf3 measured for one test (client side JSON)."""

    test: str
    seconds: float
    bits_per_second: float  # as received by the server
    bytes_sent: int  # payload bytes, all streams
    packets_sent: int  # UDP datagrams sent (0 for TCP: iperf3 does not count segments)
    lost_packets: int  # UDP datagrams the server did not get
    ports: list[int]  # client-side source ports of the data streams
    cpu_local: float  # iperf3's own CPU utilisation %, client
    cpu_remote: float  # server

    @property
    def gbps(self) -> float:
        return self.bits_per_second / 1e9


def iperf_args(server_ip: str, test: str, seconds: float, rate: str | None = None) -> list[str]:
    """iperf3 client argv for a test name (tcp-1, tcp-8, udp-64) and optional UDP rate."""
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; one of {', '.join(TESTS)}")
    args = ["iperf3", "-c", server_ip, "-t", f"{seconds:g}", "-J"]
    if test == "tcp-8":
        args += ["-P", "8"]
    elif test == "udp-64":
        args += ["-u", "-l", "64", "-b", rate or "0"]
    return args


def parse_iperf(test: str, doc: dict) -> IperfResult:
    """The numbers a benchmark needs out of iperf3's client JSON (`-J`)."""
    if "error" in doc:
        raise RuntimeError(f"iperf3: {doc['error']}")
    end = doc["end"]
    ports = [c["local_port"] for c in doc["start"]["connected"]]
    cpu = end.get("cpu_utilization_percent", {})
    if test.startswith("udp"):
        s = end["sum"]
        packets = int(s.get("packets", 0))
        lost = int(s.get("lost_packets", 0))
        # the client's "sum" is the sender's view; the received rate is (sent - lost)
        bps = s["bits_per_second"] * (1 - lost / packets) if packets else 0.0
        return IperfResult(test, s["seconds"], bps, int(s["bytes"]), packets, lost, ports,
                           cpu.get("host_total", 0.0), cpu.get("remote_total", 0.0))
    recv, sent = end["sum_received"], end["sum_sent"]
    return IperfResult(test, recv["seconds"], recv["bits_per_second"], int(sent["bytes"]), 0, 0,
                       ports, cpu.get("host_total", 0.0), cpu.get("remote_total", 0.0))


def run_iperf(net: BenchNet, test: str, seconds: float, rate: str | None = None) -> IperfResult:
    """Run one iperf3 test from the client namespace to the server and parse its JSON."""
    argv = iperf_args(net.server_ip, test, seconds, rate)
    proc = net.topo.run_in(net.client_ns, argv, timeout=seconds + 60, check=False)
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"iperf3 failed ({proc.returncode}): {proc.stderr.strip()}") from exc
    return parse_iperf(test, doc)


# ------------------------------------------------------------------------------ tables
def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
                 markdown: bool = False) -> str:
    """Aligned text table (first column left-aligned, others right-aligned), or Markdown."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if i == 0 else v.rjust(w)
                 for i, (v, w) in enumerate(zip(values, widths, strict=True))]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    rule = (["|" + "|".join("-" * (w + 2) for w in widths) + "|"] if markdown
            else ["  ".join("-" * w for w in widths)])
    return "\n".join([line(list(headers)), *rule, *(line(r) for r in cells)])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """`with timed() as t: ...` then `t[0]` is the elapsed wall time."""
    out: list[float] = []
    start = time.monotonic()
    try:
        yield out
    finally:
        out.append(time.monotonic() - start)
