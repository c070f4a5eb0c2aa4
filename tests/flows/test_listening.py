"""Listening sockets and local addresses from /proc: parsing, a fake /proc, a real netns."""

from __future__ import annotations

import os
import socket
import sys

import pytest
from tests.helpers.netns import Topology, wait_for_port

from mermin.flows.listening import WILDCARD, NodeSocketWatcher, parse_proc_net, scan_node

TCP4 = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   2: 0100007F:9C40 0100007F:0277 01 00000000:00000000 00:00000000 00000000     0
"""
UDP4 = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
 100: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0
 101: 0A00000A:D431 08080808:0035 01 00000000:00000000 00:00000000 00000000     0
"""
TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0
   1: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 0
   2: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 0
"""


def v4(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, addr) + bytes(12)


def v6(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, addr)


def test_parse_tcp_listeners_only():
    assert parse_proc_net(TCP4, 6) == {(WILDCARD, 22, 6), (v4("127.0.0.1"), 631, 6)}


def test_parse_udp_bound_unconnected_only():
    assert parse_proc_net(UDP4, 17) == {(WILDCARD, 53, 17)}


def test_parse_tcp6_wildcard_mapped_and_plain():
    assert parse_proc_net(TCP6, 6) == {
        (WILDCARD, 8080, 6), (v4("127.0.0.1"), 8081, 6), (v6("2001:db8::1"), 443, 6),
    }  # fmt: skip


def test_scan_of_a_fake_proc_tree_visits_each_namespace_once(tmp_path):
    fib = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.244.1.7
        /32 host LOCAL
     |-- 10.244.1.0
        /24 link UNICAST
"""
    for pid, ns, tcp in (("1", "net:[1]", TCP4), ("7", "net:[1]", ""), ("42", "net:[2]", TCP6)):
        net = tmp_path / pid / "net"
        net.mkdir(parents=True)
        (tmp_path / pid / "ns").mkdir()
        os.symlink(ns, tmp_path / pid / "ns" / "net")
        (net / "tcp").write_text(tcp)
        if pid == "42":
            (net / "fib_trie").write_text(fib)
            (net / "if_inet6").write_text("fd000000000000000000000000000007 02 40 00 80 eth0\n")
    snap = scan_node(tmp_path)
    assert snap.namespaces == 2
    assert (v4("127.0.0.1"), 631, 6) in snap.listeners
    assert (v6("2001:db8::1"), 443, 6) in snap.listeners
    assert snap.local_addrs == {v4("10.244.1.7"), v6("fd00::7")}
    assert snap.is_listening(v4("10.9.9.9"), 8080, 6)  # wildcard
    assert not snap.is_listening(v4("10.9.9.9"), 8080, 17)


LISTENER = """
import socket, sys, time
t = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
t.bind((sys.argv[1], 8443)); t.listen()
u = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
u.bind((sys.argv[1], 5353))
print('ready', flush=True)
time.sleep(60)
"""


@pytest.mark.privileged
@pytest.mark.usefixtures("require_root")
def test_scan_finds_sockets_and_addresses_inside_a_pod_like_netns():
    with Topology(prefix="mf") as topo:
        ns = topo.netns()
        _, inside = topo.veth(peer_ns=ns)
        topo.addr(inside, "10.213.7.2/24", ns=ns)
        topo.addr(inside, "fd00:213::2/64", ns=ns)
        proc = topo.spawn_in(ns, [sys.executable, "-c", LISTENER, "10.213.7.2"],
                             stdout=__import__("subprocess").PIPE, text=True)  # fmt: skip
        assert proc.stdout.readline().strip() == "ready"
        wait_for_port(ns, 8443)
        watcher = NodeSocketWatcher(interval=3600)
        snap = watcher.refresh()
        assert (v4("10.213.7.2"), 8443, 6) in snap.listeners
        assert (v4("10.213.7.2"), 5353, 17) in snap.listeners
        assert {v4("10.213.7.2"), v6("fd00:213::2")} <= snap.local_addrs
        assert snap.namespaces >= 2 and watcher.stats.scans == 1
