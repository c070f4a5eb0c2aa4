"""Throughput overhead, accuracy and cost of the agent and of user-space peers, in one run.

    sudo uv run python bench/bench_overhead.py [--seconds 8] [--peers softflowd,pmacctd,argus]

Topology: two network namespaces ("client", "server") behind veth pairs on a bridge in the root
namespace (the shape of two pods on one node). For each observer — none, mermin, and each peer
installed from Debian's packages (softflowd, pmacctd, argus; libpcap capture in user space) —
iperf3 runs TCP 1 stream, TCP 8 streams and UDP 64-byte datagrams at the highest rate iperf3
reaches. Printed per run: throughput (Gbit/s, packets/s), ratio to no observer, observer CPU
seconds per million packets (user+system of its processes) plus the system-wide softirq time
delta, observer RSS, and for mermin the packets it reported for the iperf3 data flow vs the
packets the interface counted (accuracy). Everything it creates is removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.netns import Topology, wait_for_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PEER_PACKAGES = {"softflowd": "softflowd", "pmacctd": "pmacct", "argus": "argus-server"}

AGENT_CONFIG = """\
log_level = "warn"
discovery "instrument" {{
  interfaces = [{ifaces}]
}}
span {{
  max_record_interval = "2s"
  poll_interval       = "500ms"
}}
export "traces" {{
  stdout = {{
    format = "json"
  }}
}}
internal "metrics" {{
  enabled = false
}}
internal "server" {{
  enabled = false
}}
"""


@dataclass
class Result:
    observer: str
    test: str
    gbps: float
    pps: float
    cpu_s: float
    softirq_s: float
    rss_mb: float
    packets: int
    reported: int | None = None


def proc_tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def softirq_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[7]) / CLK_TCK


def link_packets(name: str) -> int:
    base = Path(f"/sys/class/net/{name}/statistics")
    return int((base / "rx_packets").read_text()) + int((base / "tx_packets").read_text())


@contextlib.contextmanager
def observer(kind: str, ifaces: list[str], workdir: Path) -> Iterator[list[subprocess.Popen]]:
    """Start an observer on the interfaces; yields its processes; stops it on exit."""
    procs: list[subprocess.Popen] = []
    out = open(workdir / f"{kind}.out", "wb")  # noqa: SIM115 - closed in finally
    try:
        if kind == "mermin":
            cfg = workdir / "mermin.hcl"
            cfg.write_text(AGENT_CONFIG.format(ifaces=", ".join(f'"{i}"' for i in ifaces)))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "mermin.cli", "run", "--config", str(cfg)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO))
            time.sleep(4)
        elif kind == "softflowd":
            procs.append(subprocess.Popen(
                ["softflowd", "-d", "-i", ifaces[0], "-n", "127.0.0.1:29995", "-t", "maxlife=5"],
                stdout=out, stderr=subprocess.STDOUT))
        elif kind == "pmacctd":
            conf = workdir / "pmacctd.conf"
            conf.write_text(f"daemonize: false\npcap_interface: {ifaces[0]}\n"
                            "aggregate: src_host,dst_host,src_port,dst_port,proto\n"
                            "plugins: memory\nimt_path: " + str(workdir / "pmacct.pipe") + "\n")
            procs.append(subprocess.Popen(["pmacctd", "-f", str(conf)], stdout=out,
                                          stderr=subprocess.STDOUT))
        elif kind == "argus":
            procs.append(subprocess.Popen(["argus", "-i", ifaces[0], "-w", "/dev/null"],
                                          stdout=out, stderr=subprocess.STDOUT))
        if kind != "none":
            time.sleep(1)
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{kind} exited: {(workdir / f'{kind}.out').read_text()}")
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out.close()


def iperf(topo: Topology, client_ns: str, server_ip: str, test: str, seconds: int) -> dict:
    args = ["iperf3", "-c", server_ip, "-t", str(seconds), "-J"]
    if test == "tcp-8":
        args += ["-P", "8"]
    elif test == "udp-64":
        args += ["-u", "-b", "0", "-l", "64"]
    return json.loads(topo.run_in(client_ns, args, timeout=seconds + 30).stdout)


def mermin_reported(workdir: Path, server_ip: str) -> int:
    """Packets client->server the agent reported for iperf3 flows to port 5201."""
    total = 0
    for line in (workdir / "mermin.out").read_text().splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r.get("destination.address") == server_ip and r.get("destination.port") == 5201:
            total += r["flow.packets.delta"] + r["flow.reverse.packets.delta"]
    return total


def run(seconds: int, peers: list[str]) -> list[Result]:
    results: list[Result] = []
    with Topology(prefix="mb") as topo, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bridge = topo.bridge()
        client, server = topo.netns(), topo.netns()
        host_c, inner_c = topo.veth(peer_ns=client)
        host_s, inner_s = topo.veth(peer_ns=server)
        for host in (host_c, host_s):
            topo.enslave(host, bridge)
        topo.addr(inner_c, "10.99.0.1/24", ns=client)
        topo.addr(inner_s, "10.99.0.2/24", ns=server)
        topo.spawn_in(server, ["iperf3", "-s"])
        wait_for_port(server, 5201)
        for kind in ["none", "mermin", *peers]:
            for test in ("tcp-1", "tcp-8", "udp-64"):
                with observer(kind, [host_c, host_s], workdir) as procs:
                    pids = [p.pid for p in procs]
                    cpu0, irq0, pk0 = proc_tree_cpu(pids), softirq_seconds(), link_packets(host_c)
                    data = iperf(topo, client, "10.99.0.2", test, seconds)
                    cpu1, irq1, pk1 = proc_tree_cpu(pids), softirq_seconds(), link_packets(host_c)
                    rss = rss_mb(pids)
                end = data["end"]
                summary = end.get("sum_received") or end.get("sum")
                packets = pk1 - pk0
                results.append(Result(
                    observer=kind, test=test, gbps=summary["bits_per_second"] / 1e9,
                    pps=packets / summary["seconds"], cpu_s=cpu1 - cpu0, softirq_s=irq1 - irq0,
                    rss_mb=rss, packets=packets,
                    reported=mermin_reported(workdir, "10.99.0.2") if kind == "mermin" else None,
                ))
                print(format_row(results[-1], results), flush=True)
    return results


def format_row(r: Result, results: list[Result]) -> str:
    base = next((b for b in results if b.observer == "none" and b.test == r.test), r)
    per_m = r.cpu_s / (r.packets / 1e6) if r.packets else 0.0
    acc = "" if r.reported is None else f" reported {r.reported}/{r.packets} pkts"
    return (f"{r.observer:10} {r.test:7} {r.gbps:7.2f} Gbit/s {r.pps / 1e3:8.1f} kpps "
            f"{100 * r.gbps / base.gbps if base.gbps else 0:6.1f}% of none  "
            f"cpu {r.cpu_s:6.2f}s ({per_m:6.3f} s/Mpkt) softirq {r.softirq_s:6.2f}s "
            f"rss {r.rss_mb:6.1f} MB{acc}")


def ensure_peers(peers: list[str]) -> list[str]:
    missing = [PEER_PACKAGES[p] for p in peers if shutil.which(p) is None]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=False,
                       capture_output=True)
    return [p for p in peers if shutil.which(p)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--peers", default="softflowd,pmacctd,argus")
    args = parser.parse_args()
    peers = ensure_peers([p for p in args.peers.split(",") if p])
    print(f"# {time.strftime('%Y-%m-%d')} kernel {os.uname().release}, {os.cpu_count()} cores, "
          f"{args.seconds}s per run; peers: {', '.join(peers) or 'none'}")
    run(args.seconds, peers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
