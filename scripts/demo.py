"""Live demo: a small "node" on this machine with three "pods" (network namespaces behind veth
pairs on a bridge), real traffic between them, and the agent printing the flows it sees.

Run through `scripts/demo.sh` (it installs what is needed first). Everything created here is
removed on exit, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAG = uuid.uuid4().hex[:4]
BRIDGE = f"mdbr{TAG}"
PODS = {  # name -> (index, IPv4, IPv6)
    "web": (1, "10.231.0.11", "fd00:231::11"),
    "client": (2, "10.231.0.12", "fd00:231::12"),
    "batch": (3, "10.231.0.13", "fd00:231::13"),
}

CONFIG = """\
log_level = "info"
shutdown_timeout = "10s"

pipeline {{
  flow_capture {{
    pin_maps = false   # the demo leaves nothing behind
  }}
}}

discovery "instrument" {{
  interfaces = ["vethmd{tag}*"]
}}

span {{
  max_record_interval = "5s"
  tcp_timeout         = "10s"
  udp_timeout         = "5s"
  icmp_timeout        = "5s"
}}

export "traces" {{
  stdout = {{
    format = "{fmt}"
  }}
}}

internal "metrics" {{
  port = {metrics_port}
}}

internal "server" {{
  port = {health_port}
}}
"""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def in_pod(pod: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", f"md{TAG}{pod}", *cmd]


@contextlib.contextmanager
def node() -> Iterator[None]:
    """Bridge + one netns per pod, veth host ends on the bridge; removed on exit."""
    try:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        for pod, (index, ip4, ip6) in PODS.items():
            ns, host_end = f"md{TAG}{pod}", f"vethmd{TAG}{index}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", host_end, "master", BRIDGE, "up")
            sh(*in_pod(pod, "ip", "link", "set", "lo", "up"))
            sh(*in_pod(pod, "ip", "link", "set", "eth0", "up"))
            sh(*in_pod(pod, "ip", "addr", "add", f"{ip4}/24", "dev", "eth0"))
            sh(*in_pod(pod, "ip", "-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad"))
        yield
    finally:
        for pod in PODS:
            sh("ip", "netns", "del", f"md{TAG}{pod}", check=False)
        sh("ip", "link", "del", BRIDGE, check=False)


SERVER = textwrap.dedent("""
    import socket, socketserver, sys, threading
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            data = self.request.recv(65536)
            while data:
                if data.startswith(b"GET"):
                    self.request.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nhello from web\\n" * 4)
                    return
                data = self.request.recv(1 << 20)
    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
    class Server6(Server):
        address_family = socket.AF_INET6
        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            super().server_bind()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 5353))
    def udp_echo():
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(data, peer)
    threading.Thread(target=udp_echo, daemon=True).start()
    threading.Thread(target=Server6(("::", 8080), Echo).serve_forever, daemon=True).start()
    Server(("0.0.0.0", 8080), Echo).serve_forever()
""")

CLIENT = textwrap.dedent("""
    import socket, sys, time
    web4, web6 = sys.argv[1], sys.argv[2]
    def request(family, addr):
        with socket.create_connection((addr, 8080)) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            while s.recv(4096):
                pass
    for _ in range(3):
        request(socket.AF_INET, web4)
        request(socket.AF_INET6, web6)
        time.sleep(0.5)
    # a long transfer: 20 MiB
    with socket.create_connection((web4, 8080)) as s:
        chunk = b"x" * 65536
        for _ in range(320):
            s.sendall(chunk)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(10):
        u.sendto(b"dns-ish query %d" % i, (web4, 5353))
        u.recvfrom(2048)
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds to keep the agent running after the traffic (default 20)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("demo: run as root (it creates network namespaces and loads eBPF)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mermin-demo-"))
    config = workdir / "demo.hcl"
    config.write_text(CONFIG.format(tag=TAG, fmt=args.format, metrics_port=19090,
                                    health_port=19091))
    procs: list[subprocess.Popen[bytes]] = []
    with node():
        agent = subprocess.Popen([sys.executable, "-m", "mermin.cli", "run", "--config",
                                  str(config)])
        procs.append(agent)
        try:
            time.sleep(3)  # agent loads the program and attaches to the pods' veths
            web = subprocess.Popen(in_pod("web", sys.executable, "-c", SERVER))
            procs.append(web)
            time.sleep(1)
            print("demo: traffic: TCP request/response (v4+v6), 20 MiB transfer, UDP, ICMP",
                  file=sys.stderr)
            sh(*in_pod("client", "ping", "-c", "3", "-i", "0.2", PODS["web"][1]))
            sh(*in_pod("batch", "ping", "-6", "-c", "3", "-i", "0.2", PODS["client"][2]))
            sh(*in_pod("client", sys.executable, "-c", CLIENT, PODS["web"][1], PODS["web"][2]))
            print(f"demo: traffic done; watching flows for {args.duration:.0f}s (Ctrl-C stops)",
                  file=sys.stderr)
            time.sleep(args.duration)
        except KeyboardInterrupt:
            pass
        finally:
            # the agent first: its final reports still see the pods' servers running
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"demo: agent exited with {agent.returncode}; everything removed", file=sys.stderr)
    return 0 if agent.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
