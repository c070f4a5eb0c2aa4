"""Run the real agent (`mermin run`) as a subprocess against a test "node" and read its JSON
reports. Used by the end-to-end tests; the agent is always stopped and the node removed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.netns import Topology

REPO = Path(__file__).resolve().parents[2]

CONFIG_TEMPLATE = """\
log_level = "info"
shutdown_timeout = "15s"

pipeline {{
  flow_capture {{
    pin_maps = false
  }}
}}

discovery "instrument" {{
  interfaces = [{interfaces}]
}}

span {{
  max_record_interval = "{record_interval}"
  poll_interval       = "200ms"
  tcp_timeout         = "30s"
  udp_timeout         = "{udp_timeout}"
  icmp_timeout        = "30s"
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
{extra}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, interfaces: list[str], *, extra: str = "",
                 record_interval: str = "60s", udp_timeout: str = "30s",
                 metrics_port: int | None = None,
                 health_port: int | None = None) -> tuple[int, int]:
    metrics_port = metrics_port or free_port()
    health_port = health_port or free_port()
    path.write_text(CONFIG_TEMPLATE.format(
        interfaces=", ".join(f'"{name}"' for name in interfaces), extra=extra,
        record_interval=record_interval, udp_timeout=udp_timeout, metrics_port=metrics_port,
        health_port=health_port))
    return metrics_port, health_port


@dataclass
class RunningAgent:
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    health_port: int
    metrics_port: int
    _stopped: bool = field(default=False)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited early ({self.proc.returncode}): "
                                     f"{self.stderr_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"agent not ready after {timeout}s: "
                             f"{self.stderr_path.read_text()[-3000:]}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if not self._stopped:
            self._stopped = True
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def reports(self) -> list[dict]:
        out = []
        for line in self.stdout_path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()


@contextlib.contextmanager
def run_agent(config: Path, workdir: Path, metrics_port: int, health_port: int,
              ) -> Iterator[RunningAgent]:
    stdout_path, stderr_path = workdir / "agent.out", workdir / "agent.err"
    env = dict(os.environ)
    env.pop("MERMIN_CONFIG_PATH", None)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mermin.cli", "run", "--config", str(config)],
            stdout=out, stderr=err, cwd=REPO, env=env)
    agent = RunningAgent(proc, stdout_path, stderr_path, health_port, metrics_port)
    try:
        yield agent
    finally:
        agent.stop()


@dataclass
class Node:
    """Two or three "pods" (netns) behind veths on a bridge in the root namespace."""

    topo: Topology
    pods: dict[str, str]  # pod name -> netns
    host_ends: dict[str, str]  # pod name -> host-side veth name
    pod_ifs: dict[str, str]  # pod name -> interface inside the pod
    ip4: dict[str, str]
    ip6: dict[str, str]


@contextlib.contextmanager
def make_node(pod_names: tuple[str, ...] = ("a", "b")) -> Iterator[Node]:
    with Topology(prefix="me") as topo:
        bridge = topo.bridge()
        pods, host_ends, pod_ifs, ip4, ip6 = {}, {}, {}, {}, {}
        for i, pod in enumerate(pod_names, start=1):
            ns = topo.netns()
            host, inner = topo.veth(peer_ns=ns)
            topo.enslave(host, bridge)
            topo.addr(inner, f"10.77.{os.getpid() % 200}.{i}/24", ns=ns)
            topo.addr(inner, f"fd00:77:{os.getpid() % 200:x}::{i}/64", ns=ns)
            pods[pod], host_ends[pod], pod_ifs[pod] = ns, host, inner
            ip4[pod] = f"10.77.{os.getpid() % 200}.{i}"
            ip6[pod] = f"fd00:77:{os.getpid() % 200:x}::{i}"
        yield Node(topo, pods, host_ends, pod_ifs, ip4, ip6)


def flows_by_trace(reports: list[dict]) -> dict[str, list[dict]]:
    """Group reports by trace id (one trace per flow), in output order."""
    grouped: dict[str, list[dict]] = {}
    for r in reports:
        grouped.setdefault(r["trace_id"], []).append(r)
    return grouped


def totals(reports: list[dict]) -> tuple[int, int, int, int]:
    """(packets, bytes, reverse packets, reverse bytes) summed over a flow's deltas."""
    return (
        sum(r["flow.packets.delta"] for r in reports),
        sum(r["flow.bytes.delta"] for r in reports),
        sum(r["flow.reverse.packets.delta"] for r in reports),
        sum(r["flow.reverse.bytes.delta"] for r in reports),
    )
