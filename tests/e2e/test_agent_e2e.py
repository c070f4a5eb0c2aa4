"""End to end: the real agent on a test "node" (pods = network namespaces behind veths on a
bridge), real traffic, exact counts in its JSON reports.

Ground truth: UDP and ICMP counts are exact by construction; for TCP a tcpdump capture inside the
client pod is the oracle (IP-layer bytes per direction). Both pods' host-side veths are watched,
so pod-to-pod traffic crosses two watched hooks and must still be counted once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dpkt
import pytest
from tests.e2e.agent_harness import (
    flows_by_trace,
    make_node,
    run_agent,
    totals,
    write_config,
)
from tests.helpers.netns import ping, wait_for_port

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root", "bpf_object")]

SERVER = textwrap.dedent("""
    import socket, socketserver, threading
    class Sink(socketserver.BaseRequestHandler):
        def handle(self):
            got = 0
            while got < int(1e6):
                data = self.request.recv(65536)
                if not data:
                    break
                got += len(data)
            self.request.sendall(b"r" * 1000)
    class S4(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
    class S6(S4):
        address_family = socket.AF_INET6
        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            super().server_bind()
    def udp_echo(family, addr):
        u = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        u.bind((addr, 9001))
        while True:
            data, peer = u.recvfrom(4096)
            u.sendto(data, peer)
    threading.Thread(target=udp_echo, args=(socket.AF_INET, "0.0.0.0"), daemon=True).start()
    threading.Thread(target=udp_echo, args=(socket.AF_INET6, "::"), daemon=True).start()
    threading.Thread(target=S6(("::", 9000), Sink).serve_forever, daemon=True).start()
    S4(("0.0.0.0", 9000), Sink).serve_forever()
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    addr, family = sys.argv[1], (socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
    with socket.create_connection((addr, 9000)) as s:
        s.sendall(b"x" * int(1e6))
        s.shutdown(socket.SHUT_WR)
        got = 0
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += len(data)
        assert got == 1000, got
    u = socket.socket(family, socket.SOCK_DGRAM)
    u.settimeout(2)
    for i in range(20):
        u.sendto(b"u" * 100, (addr, 9001))
        u.recvfrom(4096)
""")


def ip_bytes_by_direction(pcap: Path, src: str, dst: str, proto: int) -> tuple[int, int, int, int]:
    """(packets src->dst, IP bytes src->dst, packets dst->src, IP bytes dst->src) in a capture."""
    import ipaddress

    fwd = [0, 0]
    rev = [0, 0]
    src_b, dst_b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    with open(pcap, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                if ip.p != proto:
                    continue
                size = ip.len
            elif isinstance(ip, dpkt.ip6.IP6):
                if ip.nxt != proto:
                    continue
                size = 40 + ip.plen
            else:
                continue
            if (ip.src, ip.dst) == (src_b, dst_b):
                fwd[0] += 1
                fwd[1] += size
            elif (ip.src, ip.dst) == (dst_b, src_b):
                rev[0] += 1
                rev[1] += size
    return fwd[0], fwd[1], rev[0], rev[1]


def find_flow(flows: dict[str, list[dict]], src: str, dst: str, transport: str,
              dport: int | None = None, icmp_type: str | None = None) -> list[dict]:
    found = [
        reports for reports in flows.values()
        if reports[0]["source.address"] == src and reports[0]["destination.address"] == dst
        and reports[0]["network.transport"] == transport
        and (dport is None or reports[0].get("destination.port") == dport)
        and (icmp_type is None or reports[0].get("flow.icmp.type.name") == icmp_type)
    ]
    assert len(found) == 1, f"expected one {transport} flow {src}->{dst}:{dport}, got {found}"
    return found[0]


def test_exact_counts_v4_v6_pod_to_pod_counted_once(tmp_path: Path) -> None:
    with make_node(("a", "b")) as node:
        topo = node.topo
        config = tmp_path / "agent.hcl"
        metrics_port, health_port = write_config(config, list(node.host_ends.values()))
        topo.spawn_in(node.pods["b"], [sys.executable, "-c", SERVER])
        wait_for_port(node.pods["b"], 9000)
        # one TCP segment per skb, so the capture inside the pod sees the wire packets that the
        # kernel program counts (with GSO it counts ceil(payload/gso_size) per super-packet)
        for pod in ("a", "b"):
            topo.run_in(None, ["ip", "-n", node.pods[pod], "link", "set", "dev",
                               node.pod_ifs[pod], "gso_max_segs", "1"])
        pcap = tmp_path / "client.pcap"
        dump = topo.spawn_in(node.pods["a"], ["tcpdump", "-i", node.pod_ifs["a"], "-U", "-n",
                                              "-w", str(pcap), "tcp or udp or icmp or icmp6"])
        time.sleep(1.0)  # tcpdump opens its socket
        with run_agent(config, tmp_path, metrics_port, health_port) as agent:
            agent.wait_ready()
            for addr in (node.ip4["b"], node.ip6["b"]):
                topo.run_in(node.pods["a"], [sys.executable, "-c", CLIENT, addr])
            assert ping(node.pods["a"], node.ip4["b"], count=5) == 5
            assert ping(node.pods["a"], node.ip6["b"], count=5) == 5
            time.sleep(1.5)  # a few polls: closed TCP flows are reported as they end
            dump.send_signal(signal.SIGINT)
            dump.wait(timeout=10)
            assert agent.stop() == 0, agent.stderr()[-3000:]
        reports = agent.reports()
    flows = flows_by_trace(reports)
    for a, b, v6 in ((node.ip4["a"], node.ip4["b"], False), (node.ip6["a"], node.ip6["b"], True)):
        tcp = find_flow(flows, a, b, "tcp", 9000)
        oracle = ip_bytes_by_direction(pcap_path(tmp_path), a, b, 6)
        assert totals(tcp) == oracle
        last = tcp[-1]
        assert (last["flow.packets.total"], last["flow.bytes.total"],
                last["flow.reverse.packets.total"], last["flow.reverse.bytes.total"]) == oracle
        assert last["flow.end_reason"] == "end_of_flow"
        assert last["flow.direction"] == "forward"
        assert "syn" in last["flow.tcp.flags.tags"] and "fin" in last["flow.tcp.flags.tags"]
        assert last["flow.tcp.handshake.latency"] > 0

        udp = find_flow(flows, a, b, "udp", 9001)
        per_packet = (40 if v6 else 20) + 8 + 100
        assert totals(udp) == (20, 20 * per_packet, 20, 20 * per_packet)

        # (neighbour discovery between the pods makes ICMPv6 flows of its own)
        icmp = find_flow(flows, a, b, "icmpv6" if v6 else "icmp", icmp_type="echo_request")
        per_echo = (40 if v6 else 20) + 8 + 56
        assert totals(icmp) == (5, 5 * per_echo, 5, 5 * per_echo)
        assert icmp[-1]["flow.icmp.type.name"] == "echo_request"
        assert icmp[-1]["flow.reverse.icmp.type.name"] == "echo_reply"


def pcap_path(tmp_path: Path) -> Path:
    return tmp_path / "client.pcap"


def test_shutdown_flushes_active_flows(tmp_path: Path) -> None:
    """Flows still active at SIGTERM get a final `forced_end` report with every packet."""
    with make_node(("a", "b")) as node:
        topo = node.topo
        config = tmp_path / "agent.hcl"
        metrics_port, health_port = write_config(config, list(node.host_ends.values()))
        topo.spawn_in(node.pods["b"], [sys.executable, "-c", SERVER])
        wait_for_port(node.pods["b"], 9001, proto="udp")
        with run_agent(config, tmp_path, metrics_port, health_port) as agent:
            agent.wait_ready()
            sender = textwrap.dedent(f"""
                import socket
                u = socket.socket(); u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.settimeout(2)
                for i in range(7):
                    u.sendto(b"z" * 50, ("{node.ip4['b']}", 9001)); u.recvfrom(100)
            """)
            topo.run_in(node.pods["a"], [sys.executable, "-c", sender])
            time.sleep(0.5)
            started = time.monotonic()
            assert agent.stop() == 0, agent.stderr()[-3000:]
            assert time.monotonic() - started < 15
        flows = flows_by_trace(agent.reports())
    udp = find_flow(flows, node.ip4["a"], node.ip4["b"], "udp", 9001)
    assert totals(udp) == (7, 7 * 78, 7, 7 * 78)
    assert udp[-1]["flow.end_reason"] == "forced_end"


def test_filters_and_reload(tmp_path: Path) -> None:
    """A filter drops UDP; after SIGHUP with a config that drops ICMP instead, UDP shows up
    and ICMP does not, without restarting (same process, flow state kept)."""
    drop_udp = '\nfilter "network" {\n  transport = { not_match = ["udp"] }\n}\n'
    drop_icmp = '\nfilter "network" {\n  transport = { not_match = ["icmp"] }\n}\n'
    with make_node(("a", "b")) as node:
        topo = node.topo
        config = tmp_path / "agent.hcl"
        ifaces = list(node.host_ends.values())
        metrics_port, health_port = write_config(config, ifaces, extra=drop_udp,
                                                 udp_timeout="1s")
        topo.spawn_in(node.pods["b"], [sys.executable, "-c", SERVER])
        wait_for_port(node.pods["b"], 9001, proto="udp")
        udp_once = textwrap.dedent(f"""
            import socket, sys
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("0.0.0.0", int(sys.argv[1]))); u.settimeout(2)
            u.sendto(b"q" * 10, ("{node.ip4['b']}", 9001)); u.recvfrom(100)
        """)
        with run_agent(config, tmp_path, metrics_port, health_port) as agent:
            agent.wait_ready()
            topo.run_in(node.pods["a"], [sys.executable, "-c", udp_once, "40001"])
            assert ping(node.pods["a"], node.ip4["b"], count=2) == 2
            time.sleep(2.5)  # the UDP flow ends (idle 1 s) and its report is filtered out
            write_config(config, ifaces, extra=drop_icmp, udp_timeout="1s",
                         metrics_port=metrics_port, health_port=health_port)
            pid_before = agent.proc.pid
            agent.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "reloaded" not in agent.stderr() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "reloaded" in agent.stderr(), agent.stderr()[-2000:]
            topo.run_in(node.pods["a"], [sys.executable, "-c", udp_once, "40002"])
            assert agent.stop() == 0
            assert agent.proc.pid == pid_before
        reports = agent.reports()
    udp_ports = {r["source.port"] for r in reports if r["network.transport"] == "udp"}
    assert udp_ports == {40002}  # 40001 was sent while UDP was filtered out
    # ICMP flow reports: the echo exchange happened before the reload; its final report is
    # emitted after the reload (forced_end at shutdown) and is filtered out by the new config
    assert not [r for r in reports if r["network.transport"] == "icmp"
                and r["flow.end_reason"] == "forced_end"]


def test_bad_config_exits_2_and_attaches_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.hcl"
    config.write_text('discovery "instrument" {\n  interfacez = ["veth*"]\n}\n')
    proc = subprocess.run([sys.executable, "-m", "mermin.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "interfacez" in proc.stderr and str(config) in proc.stderr
    assert "interfaces" in proc.stderr  # the suggestion
    links = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True).stdout
    assert "mermin" not in links
