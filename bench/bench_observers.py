"""The observers the benchmarks compare, each started on the same interfaces and stopped for sure.

    none       nothing attached (the baseline)
    datapath   mermin's kernel program alone (build/mermin.bpf.o via mermin.datapath), no agent:
               exact in-kernel counts, kernel-only cost
    mermin     the whole agent, `python -m mermin.cli run --config X.hcl` (JSON reports on stdout)
    softflowd  libpcap, NetFlow v5 to a local collector (`NetflowCollector`)
    fprobe     libpcap, NetFlow v5 to a local collector
    pmacctd    libpcap, memory plugin, queried with `pmacct -s -O json`
    argus      libpcap, records to a file, read back with `ra`

Every observer is used the same way:

    obs = make_observer("softflowd", workdir)
    with obs.running(net.host_ifaces):      # started; stopped and killed on exit, always
        ... traffic ...
        obs.pids()                          # for CPU / RSS accounting
    obs.flows                               # per-direction counts it reported (after exit)
    obs.drops                               # its own loss counters, by name

mermin attaches to both host-side veths (its kernel program deduplicates a packet seen twice);
the libpcap peers capture on the client's host-side veth, which carries both directions.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_common import REPO, free_port, tree_pids

__all__ = [
    "OBSERVERS",
    "PEER_PACKAGES",
    "FlowCount",
    "NetflowCollector",
    "Observer",
    "available",
    "ensure_installed",
    "make_observer",
    "parse_netflow_v5",
    "parse_prometheus",
]

PEER_PACKAGES = {
    "softflowd": "softflowd",
    "fprobe": "fprobe",
    "pmacctd": "pmacct",
    "argus": "argus-server",
}
OBSERVERS = ("none", "datapath", "mermin", *PEER_PACKAGES)


@dataclass(frozen=True, slots=True)
class FlowCount:
    """What an observer reported for one direction of one flow (IP-layer bytes)."""

    src: str
    sport: int
    dst: str
    dport: int
    proto: int
    packets: int
    bytes: int


def sum_flows(flows: Sequence[FlowCount], src: str, sport: int, dst: str, dport: int,
              proto: int) -> tuple[int, int]:
    """(packets, bytes) over every record of one direction of one flow."""
    packets = bytes_ = 0
    for f in flows:
        if (f.src, f.sport, f.dst, f.dport, f.proto) == (src, sport, dst, dport, proto):
            packets += f.packets
            bytes_ += f.bytes
    return packets, bytes_


# ------------------------------------------------------------------------------ base
class Observer:
    """Base: subclasses implement `_start` and `_collect`; `running` guarantees the stop."""

    name = "none"
    user_space = False  # has processes whose CPU/RSS we account

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.flows: list[FlowCount] | None = None
        self.drops: dict[str, int] = {}
        self.notes: list[str] = []
        self._logs: list[object] = []

    @contextlib.contextmanager
    def running(self, ifaces: Sequence[str]) -> Iterator[Observer]:
        try:
            self._start(list(ifaces))
            self._check_alive()
            yield self
            self._collect()
        finally:
            self._stop()

    def pids(self) -> list[int]:
        """Every live process of this observer (children included)."""
        out: list[int] = []
        for p in self.procs:
            if p.poll() is None:
                out.extend(tree_pids(p.pid))
        return out

    # -- to override -----------------------------------------------------------------------
    def _start(self, ifaces: list[str]) -> None:
        """Start observing `ifaces`; return when it is capturing."""

    def _collect(self) -> None:
        """Stop gracefully and read what the observer reported into `flows` / `drops`."""

    # -- helpers ---------------------------------------------------------------------------
    def _spawn(self, argv: list[str], log_name: str | None = None, **kw) -> subprocess.Popen:
        out = open(self.workdir / f"{log_name or self.name}.log", "ab")  # noqa: SIM115
        self._logs.append(out)
        kw.setdefault("stdout", out)
        kw.setdefault("stderr", subprocess.STDOUT if kw["stdout"] is out else out)
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def log_text(self, log_name: str | None = None) -> str:
        path = self.workdir / f"{log_name or self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({p.returncode}) at start: "
                                   f"{self.log_text()[-2000:]}")

    def _terminate(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal each process (group), wait, SIGKILL the group if it does not exit."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.notes.append(f"{self.name} did not stop on signal {sig}: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def _stop(self) -> None:
        self._terminate()
        for p in self.procs:
            if p.stdout is not None:
                with contextlib.suppress(Exception):
                    p.stdout.close()
        for f in self._logs:
            with contextlib.suppress(Exception):
                f.close()  # type: ignore[attr-defined]
        self._logs.clear()


class NoObserver(Observer):
    name = "none"


# ------------------------------------------------------------------------------ datapath only
class DatapathObserver(Observer):
    """mermin's kernel program, loaded unpinned and attached (TCX) in this process.

    No user space: the per-flow counts are read straight from the FLOWS map at the end, and
    `drops` are the kernel's own loss counters (map_full, unparsed_*, frag_*).
    """

    name = "datapath"

    def __init__(self, workdir: Path, capacity: int = 65536) -> None:
        super().__init__(workdir)
        self.capacity = capacity
        self.counters: dict[str, int] = {}
        self._stats_fd = -1
        self._dp = None
        self._att = None

    def _start(self, ifaces: list[str]) -> None:
        from mermin.datapath import libbpf
        from mermin.datapath.attach import Attacher
        from mermin.datapath.loader import Datapath, DatapathSettings

        # BPF_ENABLE_STATS: the kernel times every BPF program run while this fd is open
        # (kernel-wide, closed with the observer), which gives the program's ns per packet.
        self._stats_fd = int(libbpf.lib().bpf_enable_stats(0))  # BPF_STATS_RUN_TIME
        self._dp = Datapath.load(settings=DatapathSettings(flows_capacity=self.capacity,
                                                           pin=False))
        self._att = Attacher(self._dp)
        for name in ifaces:
            self._att.attach(socket.if_nametoindex(name), name)

    def map_counts(self) -> list[FlowCount]:
        """Both directions of every entry of the FLOWS map, now."""
        assert self._dp is not None
        keys, values = self._dp.flows.read_all()
        return flows_from_map(keys, values)

    def _collect(self) -> None:
        assert self._dp is not None
        self.flows = self.map_counts()
        self.counters = self._dp.counters()
        # unparsed_ethertype is ARP & co: not IP, so not a flow the benchmark lost
        self.drops = {k: v for k, v in self.counters.items()
                      if k.startswith(("map_full", "unparsed", "frag"))
                      and k != "unparsed_ethertype"}

    def run_stats(self) -> tuple[int, int] | None:
        """(run time ns, runs) of both programs so far; None without BPF_ENABLE_STATS."""
        from mermin.datapath import libbpf

        if self._dp is None or self._stats_fd < 0:
            return None
        ns = runs = 0
        for prog in ("mermin_ingress", "mermin_egress"):
            buf = ctypes.create_string_buffer(232)  # struct bpf_prog_info up to run_cnt
            size = ctypes.c_uint32(len(buf))
            if libbpf.lib().bpf_obj_get_info_by_fd(self._dp.program_fd(prog), buf,
                                                   ctypes.byref(size)) != 0:
                return None
            t, n = struct.unpack_from("<QQ", buf.raw, 192)  # run_time_ns, run_cnt
            ns, runs = ns + t, runs + n
        return ns, runs

    def _stop(self) -> None:
        try:
            if self._att is not None:
                self._att.detach_all()
        finally:
            if self._dp is not None:
                self._dp.close()
            self._att = self._dp = None
            if self._stats_fd >= 0:
                os.close(self._stats_fd)
            self._stats_fd = -1


def flows_from_map(keys, values) -> list[FlowCount]:
    """FLOWS entries (normalized a/b key, dir[0] a->b, dir[1] b->a) as per-direction counts."""
    out: list[FlowCount] = []
    for k, v in zip(keys, values, strict=True):
        n = 4 if k["ip_version"] == 4 else 16
        a = str(ipaddress.ip_address(bytes(k["addr_a"][:n])))
        b = str(ipaddress.ip_address(bytes(k["addr_b"][:n])))
        pa, pb, proto = int(k["port_a"]), int(k["port_b"]), int(k["protocol"])
        d0, d1 = v["dir"][0], v["dir"][1]
        if d0["packets"]:
            out.append(FlowCount(a, pa, b, pb, proto, int(d0["packets"]), int(d0["bytes"])))
        if d1["packets"]:
            out.append(FlowCount(b, pb, a, pa, proto, int(d1["packets"]), int(d1["bytes"])))
    return out


# ------------------------------------------------------------------------------ the agent
AGENT_CONFIG = """\
log_level = "warn"
shutdown_timeout = "20s"
discovery "instrument" {{
  interfaces = [{ifaces}]
}}
pipeline {{
  flow_capture {{
    flow_stats_capacity = {capacity}
  }}
}}
span {{
  max_record_interval = "{record_interval}"
  poll_interval       = "{poll_interval}"
  tcp_timeout         = "{timeout}"
  tcp_rst_timeout     = "{rst_timeout}"
  tcp_fin_timeout     = "{rst_timeout}"
  udp_timeout         = "{timeout}"
}}
export "traces" {{
  stdout = {{
    format = "json"
  }}
}}
internal "metrics" {{
  port = {metrics_port}
}}
internal "server" {{
  port = {health_port}
}}
"""


@dataclass(slots=True)
class Report:
    """One JSON report line of the agent and when the benchmark read it."""

    arrived: float  # time.time() when the line was read from the agent's stdout
    data: dict


class AgentObserver(Observer):
    """The whole agent as a subprocess; reports (JSON on stdout) are read by a thread that
    stamps their arrival time, and /metrics is scraped before it stops."""

    name = "mermin"
    user_space = True

    def __init__(self, workdir: Path, *, capacity: int = 65536, record_interval: str = "10s",
                 poll_interval: str = "1s", timeout: str = "60s",
                 rst_timeout: str = "5s", private_bpffs: bool = True) -> None:
        super().__init__(workdir)
        self.private_bpffs = private_bpffs
        self.settings = dict(capacity=capacity, record_interval=record_interval,
                             poll_interval=poll_interval, timeout=timeout,
                             rst_timeout=rst_timeout)
        self.stopped_at = 0.0  # time.time() when SIGTERM was sent
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.reports: list[Report] = []
        self.metrics: dict[str, float] = {}
        self._reader: threading.Thread | None = None

    def _start(self, ifaces: list[str]) -> None:
        cfg = self.workdir / "mermin.hcl"
        cfg.write_text(AGENT_CONFIG.format(
            ifaces=", ".join(f'"{i}"' for i in ifaces), metrics_port=self.metrics_port,
            health_port=self.health_port, **self.settings))
        env = dict(os.environ)
        env.pop("MERMIN_CONFIG_PATH", None)
        argv = [sys.executable, "-m", "mermin.cli", "run", "--config", str(cfg)]
        if self.private_bpffs:
            # A mount namespace of its own with a fresh BPF filesystem: the agent's pinned
            # maps and links are private (another agent on this machine, e.g. a test, pins
            # at the same path and would share its FLOWS map) and vanish with the process.
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount -t bpf bpf /sys/fs/bpf && exec "$@"', "sh", *argv]
        proc = self._spawn(argv, stdout=subprocess.PIPE, cwd=REPO, env=env)  # logs: mermin.log
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()
        self._wait_ready(proc, set(ifaces))

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if raw.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    self.reports.append(Report(time.time(), json.loads(raw)))

    def _wait_ready(self, proc: subprocess.Popen, ifaces: set[str],
                    timeout: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mermin exited ({proc.returncode}) at start: "
                                   f"{self.log_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    self._wait_attached(len(ifaces), deadline)
                    return
            time.sleep(0.1)
        raise RuntimeError(f"mermin not ready after {timeout}s: {self.log_text()[-3000:]}")

    def _wait_attached(self, n: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                got = self.scrape().get("mermin_interfaces_attached", n)
                if got >= n:
                    return
            time.sleep(0.1)

    def scrape(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return parse_prometheus(resp.read().decode())

    def _collect(self) -> None:
        with contextlib.suppress(OSError):
            self.metrics = self.scrape()
        self.stopped_at = time.time()
        self._terminate(signal.SIGTERM, timeout=30)  # final reports for every active flow
        if self._reader is not None:
            self._reader.join(timeout=10)
        self.flows = flows_from_reports([r.data for r in self.reports])
        self.drops = agent_drops(self.metrics)


def flows_from_reports(reports: Sequence[dict]) -> list[FlowCount]:
    """Agent reports (SCHEMA.md attributes) as per-direction counts."""
    out: list[FlowCount] = []
    for r in reports:
        proto = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}.get(
            str(r.get("network.transport", "")).lower(), -1)
        src, dst = r.get("source.address", ""), r.get("destination.address", "")
        sp, dp = int(r.get("source.port", 0) or 0), int(r.get("destination.port", 0) or 0)
        out.append(FlowCount(src, sp, dst, dp, proto, int(r.get("flow.packets.delta", 0)),
                             int(r.get("flow.bytes.delta", 0))))
        out.append(FlowCount(dst, dp, src, sp, proto,
                             int(r.get("flow.reverse.packets.delta", 0)),
                             int(r.get("flow.reverse.bytes.delta", 0))))
    return out


def agent_drops(metrics: dict[str, float]) -> dict[str, int]:
    """Every loss counter the agent exposes (kernel map full, unparsed, export drops...)."""
    keys = ("mermin_ebpf_map_full", "mermin_ebpf_unparsed", "mermin_ebpf_fragments_untracked",
            "mermin_export_dropped", "mermin_shutdown_flows_total{status=\"lost\"}")
    return {k: int(v) for k, v in metrics.items()
            if k.startswith(keys) and v and "ethertype" not in k and not k.endswith("_created")}


_PROM_LINE = re.compile(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{labels}': value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _PROM_LINE.match(line)
        if m:
            with contextlib.suppress(ValueError):
                out[m.group(1)] = float(m.group(2))
    return out


# ------------------------------------------------------------------------------ NetFlow peers
_V5_HEADER = struct.Struct("!HHIIIIBBH")
_V5_RECORD = struct.Struct("!4s4s4sHHIIIIHHBBBBHHBBH")


def parse_netflow_v5(datagram: bytes) -> tuple[int, list[FlowCount]]:
    """One NetFlow v5 export datagram -> (flow_sequence of its first record, records)."""
    version, count, _up, _s, _ns, seq, _et, _eid, _samp = _V5_HEADER.unpack_from(datagram)
    if version != 5:
        raise ValueError(f"NetFlow version {version}, expected 5")
    flows = []
    for i in range(count):
        rec = _V5_RECORD.unpack_from(datagram, _V5_HEADER.size + i * _V5_RECORD.size)
        src, dst, _nh, _in, _out, pkts, octets, _f, _l, sport, dport = rec[:11]
        proto = rec[13]
        flows.append(FlowCount(socket.inet_ntoa(src), sport, socket.inet_ntoa(dst), dport,
                               proto, pkts, octets))
    return seq, flows


class NetflowCollector:
    """A UDP NetFlow v5 collector on 127.0.0.1 (thread). Counts lost export datagrams from
    gaps in flow_sequence."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.flows: list[FlowCount] = []
        self.datagrams = 0
        self.missing_records = 0
        self._next_seq: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(ValueError, struct.error):
                seq, flows = parse_netflow_v5(data)
                if self._next_seq is not None and seq > self._next_seq:
                    self.missing_records += seq - self._next_seq
                self._next_seq = seq + len(flows)
                self.datagrams += 1
                self.flows.extend(flows)

    def close(self, linger: float = 1.0) -> None:
        time.sleep(linger)  # let the last datagrams in
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class _NetflowPeer(Observer):
    user_space = True

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.collector: NetflowCollector | None = None

    def _argv(self, iface: str, port: int) -> list[str]:
        raise NotImplementedError

    def _start(self, ifaces: list[str]) -> None:
        self.collector = NetflowCollector()
        self._spawn(self._argv(ifaces[0], self.collector.port))
        time.sleep(1.0)  # pcap handle open

    def _before_stop(self) -> None:
        """Peer-specific: read statistics while it still runs."""

    def _collect(self) -> None:
        self._before_stop()
        self._terminate(signal.SIGTERM)  # both export every active flow when they exit
        assert self.collector is not None
        self.collector.close()
        self.flows = self.collector.flows
        self.drops["export_records_missing"] = self.collector.missing_records

    def _stop(self) -> None:
        super()._stop()
        if self.collector is not None and not self.collector._stop.is_set():
            self.collector.close(linger=0)


class SoftflowdObserver(_NetflowPeer):
    name = "softflowd"

    def _argv(self, iface: str, port: int) -> list[str]:
        self.ctl = self.workdir / "softflowd.ctl"
        return ["softflowd", "-d", "-i", iface, "-n", f"127.0.0.1:{port}", "-v", "5",
                "-m", "200000", "-c", str(self.ctl), "-p", str(self.workdir / "softflowd.pid"),
                "-t", "maxlife=300", "-t", "general=300"]

    def _before_stop(self) -> None:
        # softflowd does not export its active flows when it exits: expire them first
        subprocess.run(["softflowctl", "-c", str(self.ctl), "expire-all"],
                       capture_output=True, text=True, timeout=10)
        time.sleep(1.0)
        out = subprocess.run(["softflowctl", "-c", str(self.ctl), "statistics"],
                             capture_output=True, text=True, timeout=10).stdout
        (self.workdir / "softflowd.stats").write_text(out)
        for label, key in (("dropped by libpcap", "pcap_dropped"),
                           ("dropped by interface", "pcap_if_dropped")):
            m = re.search(rf"{label}[^0-9]*(\d+)", out, re.IGNORECASE)
            if m:
                self.drops[key] = int(m.group(1))


class FprobeObserver(_NetflowPeer):
    name = "fprobe"

    def _argv(self, iface: str, port: int) -> list[str]:
        # -l 2: log to stdout and stay in the foreground; -S 0: whole packet; large timers
        # so flows are exported only when it exits (like the others).
        return ["fprobe", "-l", "2", "-i", iface, "-f", "ip", "-S", "0", "-e", "300",
                "-d", "300", "-q", "100000", f"127.0.0.1:{port}"]


# ------------------------------------------------------------------------------ pmacct
class PmacctObserver(Observer):
    """pmacctd with the in-memory table, queried (JSON) before it is stopped."""

    name = "pmacctd"
    user_space = True

    def _start(self, ifaces: list[str]) -> None:
        self.pipe = self.workdir / "pmacct.pipe"
        conf = self.workdir / "pmacctd.conf"
        conf.write_text(
            "daemonize: false\n"
            f"pcap_interface: {ifaces[0]}\n"
            "aggregate: src_host,dst_host,src_port,dst_port,proto\n"
            "plugins: memory\n"
            f"imt_path: {self.pipe}\n"
            "imt_mem_pools_number: 0\n"
            # generous core->plugin buffers (CONFIG-KEYS advice against "Missing data")
            "plugin_pipe_size: 67108864\n"
            "plugin_buffer_size: 65536\n"
            f"pidfile: {self.workdir / 'pmacctd.pid'}\n")
        self._spawn(["pmacctd", "-f", str(conf)])
        deadline = time.monotonic() + 15
        while not self.pipe.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)

    def _collect(self) -> None:
        time.sleep(1.5)  # the core process hands packets to the plugin in batches
        proc = subprocess.run(["pmacct", "-p", str(self.pipe), "-s", "-O", "json", "-u"],
                              capture_output=True, text=True, timeout=30)
        self.flows = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            proto = r.get("ip_proto", -1)
            with contextlib.suppress(ValueError):
                proto = int(proto)
            if not isinstance(proto, int):
                proto = {"tcp": 6, "udp": 17, "icmp": 1}.get(str(proto), -1)
            self.flows.append(FlowCount(r.get("ip_src", ""), int(r.get("port_src", 0)),
                                        r.get("ip_dst", ""), int(r.get("port_dst", 0)),
                                        proto, int(r.get("packets", 0)),
                                        int(r.get("bytes", 0))))
        self._terminate(signal.SIGINT)  # pmacctd logs its pcap statistics on exit
        log = self.log_text()
        m = re.search(r"(\d+) packets received by filter.*?(\d+) packets dropped by kernel",
                      log, re.S | re.I)
        if m:
            self.drops["pcap_dropped"] = int(m.group(2))
        missing = log.count("Missing data detected")
        if missing:
            self.drops["plugin_missing_data_events"] = missing


# ------------------------------------------------------------------------------ argus
class ArgusObserver(Observer):
    """argus writing records to a file (read with `ra` after it stops)."""

    name = "argus"
    user_space = True

    def _start(self, ifaces: list[str]) -> None:
        self.out = self.workdir / "argus.out"
        self.out.unlink(missing_ok=True)
        self._spawn(["argus", "-X", "-i", ifaces[0], "-w", str(self.out), "-P", "0",
                     "-S", "300", "-s", "128"])
        time.sleep(1.5)

    def _collect(self) -> None:
        self._terminate(signal.SIGTERM)
        if not self.out.exists():
            self.notes.append("argus wrote no records")
            self.flows = []
            return
        fields = "saddr sport daddr dport proto spkts dpkts sbytes dbytes"
        proc = subprocess.run(["ra", "-r", str(self.out), "-n", "-u", "-c", ",", "-L", "-1",
                               "-s", *fields.split()], capture_output=True, text=True,
                              timeout=60)
        self.flows = []
        implausible = 0
        for line in proc.stdout.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 9 or not parts[5].isdigit():
                continue
            sa, sp, da, dp, proto, spk, dpk, sb, db = parts
            if max(int(spk), int(dpk)) > 10**11:
                implausible += 1  # seen at ~10 Gbit/s: absurd packet counters, corrupt record
                continue
            pn = {"tcp": 6, "udp": 17, "icmp": 1}.get(proto, -1)
            sport, dport = _port(sp), _port(dp)
            self.flows.append(FlowCount(sa, sport, da, dport, pn, int(spk), int(sb)))
            self.flows.append(FlowCount(da, dport, sa, sport, pn, int(dpk), int(db)))
        self.notes.append("argus bytes include the 14-byte Ethernet header")
        if implausible:
            self.notes.append(f"argus: ignored {implausible} record(s) with more than 1e11 "
                              "packets (corrupt counters)")


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return int(text, 16) if text.startswith("0x") else 0


# ------------------------------------------------------------------------------ registry
_CLASSES: dict[str, type[Observer]] = {
    "none": NoObserver,
    "datapath": DatapathObserver,
    "mermin": AgentObserver,
    "softflowd": SoftflowdObserver,
    "fprobe": FprobeObserver,
    "pmacctd": PmacctObserver,
    "argus": ArgusObserver,
}


def make_observer(name: str, workdir: Path, **kwargs) -> Observer:
    try:
        cls = _CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown observer {name!r}; one of {', '.join(_CLASSES)}") from None
    return cls(workdir, **kwargs)


def available(name: str) -> str | None:
    """None when `name` can run here, else why not."""
    if name in PEER_PACKAGES:
        return None if shutil.which(name) else f"{name} not installed"
    if name in ("datapath", "mermin"):
        from mermin.datapath.loader import find_object_path

        try:
            find_object_path()
        except Exception as exc:
            return str(exc)
    return None


def ensure_installed(names: Sequence[str]) -> None:
    """apt-get install the Debian packages of missing peers (best effort)."""
    missing = sorted({PEER_PACKAGES[n] for n in names if n in PEER_PACKAGES
                      and shutil.which(n) is None})
    if missing and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=False,
                       capture_output=True, timeout=600)

