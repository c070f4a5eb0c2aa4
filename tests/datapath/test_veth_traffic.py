"""Real traffic between two pod namespaces behind a bridge, counted by the real program.

    pod1 netns            root netns                pod2 netns
    [p1] ────veth──── [h1]──bridge──[h2] ────veth──── [p2]

The agent attaches to the host side of veths (h1, h2), as it does on a node. With only h1
watched, every packet between the pods crosses one hook exactly once, so FLOWS must hold
exact counts: UDP and ICMP by construction (N datagrams / echoes of a known size); TCP from a
second, independent count: an AF_PACKET capture in pod1 of the same connection, once with
one segment per skb (gso_max_segs 1) and once with GSO super-packets, which the capture
expands into wire segments from their virtio_net_hdr gso_size. With
h1 and h2 both watched, a packet crosses two hooks and must still be counted once, with the
DUPLICATE counter showing the second sighting.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.netns import Topology, ping

from mermin.datapath.abi import Counter
from mermin.datapath.attach import Attacher
from mermin.datapath.fake import key as flow_key
from mermin.datapath.loader import Datapath, DatapathSettings

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]

# One helper script, several roles (argv[1]); each prints one JSON line when done.
TRAFFIC = r"""
import json, select, socket, struct, sys
role, args = sys.argv[1], sys.argv[2:]
fam = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET

if role == "tcp-server":               # addr port: accept one connection, read to EOF
    s = socket.socket(fam(args[0])); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args[0], int(args[1]))); s.listen(1); print(json.dumps({"ready": 1}), flush=True)
    c, _ = s.accept(); n = 0
    while (d := c.recv(65536)):
        n += len(d)
    c.close(); print(json.dumps({"received": n}), flush=True)
elif role == "tcp-client":             # addr port nbytes: send, half-close, wait for EOF
    c = socket.create_connection((args[0], int(args[1])), timeout=10)
    c.sendall(b"m" * int(args[2])); c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    port = c.getsockname()[1]; c.close(); print(json.dumps({"port": port}), flush=True)
elif role == "udp-server":             # addr port count
    s = socket.socket(fam(args[0]), socket.SOCK_DGRAM); s.bind((args[0], int(args[1])))
    s.settimeout(5); print(json.dumps({"ready": 1}), flush=True); n = 0
    try:
        while n < int(args[2]):
            s.recv(65536); n += 1
    except TimeoutError:
        pass
    print(json.dumps({"received": n}), flush=True)
elif role == "udp-client":             # addr port count size
    s = socket.socket(fam(args[0]), socket.SOCK_DGRAM)
    s.bind(("::" if ":" in args[0] else "0.0.0.0", 0))
    for _ in range(int(args[2])):
        s.sendto(b"u" * int(args[3]), (args[0], int(args[1])))
    print(json.dumps({"port": s.getsockname()[1]}), flush=True)
elif role == "capture":                # ifname proto port: count IP packets/bytes per direction
    # Wire packets: a GSO skb stands for ceil(payload / gso_size) segments, each carrying the
    # IP + TCP headers; the virtio_net_hdr (PACKET_VNET_HDR) tells gso_size per skb.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
    s.bind((args[0], 0))
    s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: never drop
    proto, port, tally = int(args[1]), int(args[2]), {"out": [0, 0], "in": [0, 0]}
    print(json.dumps({"ready": 1}), flush=True)
    while True:
        r, _, _ = select.select([s, sys.stdin], [], [])
        if sys.stdin in r:
            break
        data, meta = s.recvfrom(262144)
        gso_size, frame = struct.unpack("=H", data[4:6])[0], data[10:]
        ethertype = struct.unpack("!H", frame[12:14])[0]
        if ethertype == 0x0800:
            ip = frame[14:]; p = ip[9]; l4 = ip[(ip[0] & 15) * 4:]
            length = struct.unpack("!H", ip[2:4])[0]
        elif ethertype == 0x86DD:
            ip = frame[14:]; p = ip[6]; l4 = ip[40:]; length = 40 + struct.unpack("!H", ip[4:6])[0]
        else:
            continue
        if p != proto or port not in struct.unpack("!HH", l4[:4]):
            continue
        hdr = len(ip) - len(l4) + (l4[12] >> 4) * 4
        segs = -(-(length - hdr) // gso_size) if gso_size else 1
        side = tally["out" if meta[2] == socket.PACKET_OUTGOING else "in"]
        side[0] += segs; side[1] += length + (segs - 1) * hdr
        tally["gso"] = tally.get("gso", 0) + (segs > 1)
    tally["drops"] = struct.unpack("II", s.getsockopt(263, 6, 8))[1]  # PACKET_STATISTICS
    print(json.dumps(tally), flush=True)
"""


@dataclass
class Pods:
    topo: Topology
    ns1: str
    ns2: str
    p1: str
    h1: str
    h2: str
    addr1: dict[int, str]
    addr2: dict[int, str]

    def run(self, ns: str, role: str, *args: object) -> dict:
        out = self.topo.run_in(ns, [sys.executable, "-c", TRAFFIC, role, *map(str, args)])
        return json.loads(out.stdout.strip().splitlines()[-1])

    def spawn(self, ns: str, role: str, *args: object) -> subprocess.Popen:
        argv = [sys.executable, "-c", TRAFFIC, role, *map(str, args)]
        proc = self.topo.spawn_in(ns, argv, stdin=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert json.loads(line) == {"ready": 1}, line + proc.stderr.read()
        return proc

    @staticmethod
    def result(proc: subprocess.Popen) -> dict:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def pods() -> Iterator[Pods]:
    with Topology(prefix="ml") as topo:
        ns1, ns2 = topo.netns(), topo.netns()
        br = topo.bridge()
        h1, p1 = topo.veth(peer_ns=ns1)
        h2, p2 = topo.veth(peer_ns=ns2)
        for link, ns in ((h1, None), (h2, None), (p1, ns1), (p2, ns2)):
            topo.link_set(link, "gso_max_segs", "1", ns=ns)
        topo.enslave(h1, br)
        topo.enslave(h2, br)
        sub = np.random.default_rng().integers(1, 250)
        addr1 = {4: f"10.{sub}.7.1", 6: f"fd00:{sub:x}:7::1"}
        addr2 = {4: f"10.{sub}.7.2", 6: f"fd00:{sub:x}:7::2"}
        for ns, link, addr in ((ns1, p1, addr1), (ns2, p2, addr2)):
            topo.addr(link, f"{addr[4]}/24", ns=ns)
            topo.addr(link, f"{addr[6]}/64", ns=ns)
        yield Pods(topo, ns1, ns2, p1, h1, h2, addr1, addr2)
    assert not topo.leftovers


@pytest.fixture
def dp(bpf_object: Path) -> Iterator[Datapath]:
    with Datapath.load(bpf_object, DatapathSettings(pin=False)) as datapath:
        yield datapath


@pytest.fixture
def att(dp: Datapath) -> Iterator[Attacher]:
    attacher = Attacher(dp)
    yield attacher
    attacher.detach_all()


def flow_entry(dp: Datapath, src: str, dst: str, sport: int, dport: int, proto: int):
    """(value, side of src) of one flow in FLOWS; fails if absent."""
    k, side = flow_key(src, dst, sport, dport, proto)
    value = dp.flows.lookup(k)
    assert value is not None, f"no flow {src}:{sport} -> {dst}:{dport} proto {proto}"
    return value, side


def icmp_entry(dp: Datapath, src: str, dst: str, proto: int):
    """The echo flow between src and dst (the identifier is in both ports)."""
    keys, values = dp.flows.read_all()
    k0, side = flow_key(src, dst, 0, 0, proto)
    match = (
        (keys["addr_a"] == k0["addr_a"]).all(axis=1)
        & (keys["addr_b"] == k0["addr_b"]).all(axis=1)
        & (keys["protocol"] == proto)
        & (keys["port_a"] == keys["port_b"])
        & (keys["port_a"] != 0)
    )
    assert match.sum() == 1, f"{match.sum()} echo flows {src} <-> {dst}"
    return values[match][0], side


def ip_header(version: int) -> int:
    return 20 if version == 4 else 40


@pytest.mark.parametrize("version", [4, 6])
def test_udp_exact_counts(dp: Datapath, pods: Pods, att: Attacher, version: int) -> None:
    att.attach(pods.topo.ifindex(pods.h1), pods.h1)
    count, size, port = 25, 300, 5353
    server = pods.spawn(pods.ns2, "udp-server", pods.addr2[version], port, count)
    sport = pods.run(pods.ns1, "udp-client", pods.addr2[version], port, count, size)["port"]
    assert pods.result(server)["received"] == count
    v, side = flow_entry(dp, pods.addr1[version], pods.addr2[version], sport, port, 17)
    fwd, rev = v["dir"][side], v["dir"][1 - side]
    assert fwd["packets"] == count
    assert fwd["bytes"] == count * (ip_header(version) + 8 + size)
    assert rev["packets"] == 0 and rev["bytes"] == 0
    assert v["first_side"] == side


@pytest.mark.parametrize("version", [4, 6])
def test_icmp_echo_exact_counts(dp: Datapath, pods: Pods, att: Attacher, version: int) -> None:
    att.attach(pods.topo.ifindex(pods.h1), pods.h1)
    count, size = 7, 120
    assert ping(pods.ns1, pods.addr2[version], count=count, size=size, interval=0.01) == count
    proto = 1 if version == 4 else 58
    v, side = icmp_entry(dp, pods.addr1[version], pods.addr2[version], proto)
    per_packet = ip_header(version) + 8 + size
    for d in (v["dir"][side], v["dir"][1 - side]):  # requests, replies
        assert (d["packets"], d["bytes"]) == (count, count * per_packet)
    assert v["dir"][side]["icmp_type"] == (8 if version == 4 else 128)
    assert v["dir"][1 - side]["icmp_type"] == (0 if version == 4 else 129)


@pytest.mark.parametrize("gso", [False, True], ids=["nogso", "gso"])
@pytest.mark.parametrize("version", [4, 6])
def test_tcp_counts_match_a_capture(
    dp: Datapath, pods: Pods, att: Attacher, version: int, gso: bool
) -> None:
    """Wire packets and bytes per direction. With GSO on, the program sees super-packets and
    must count them as the segments they stand for."""
    if gso:
        pods.topo.link_set(pods.p1, "gso_max_segs", "65535", ns=pods.ns1)
        pods.topo.link_set(pods.h1, "gso_max_segs", "65535")
    att.attach(pods.topo.ifindex(pods.h1), pods.h1)
    nbytes, port = 300_000, 8080
    capture = pods.spawn(pods.ns1, "capture", pods.p1, 6, port)
    server = pods.spawn(pods.ns2, "tcp-server", pods.addr2[version], port)
    sport = pods.run(pods.ns1, "tcp-client", pods.addr2[version], port, nbytes)["port"]
    assert pods.result(server)["received"] == nbytes
    time.sleep(0.3)  # the last ACK
    seen = Pods.result(capture)  # closing its stdin ends the capture
    assert seen["drops"] == 0
    assert (seen.get("gso", 0) > 0) == gso  # the variant really exercised GSO (or not)
    v, side = flow_entry(dp, pods.addr1[version], pods.addr2[version], sport, port, 6)
    fwd, rev = v["dir"][side], v["dir"][1 - side]
    assert [int(fwd["packets"]), int(fwd["bytes"])] == seen["out"]
    assert [int(rev["packets"]), int(rev["bytes"])] == seen["in"]
    assert fwd["bytes"] > nbytes  # payload plus every header
    assert fwd["tcp_flags"] & 0x02 and rev["tcp_flags"] & 0x12 == 0x12  # SYN / SYN-ACK
    assert v["tcp_syn_ns"] and v["tcp_synack_ns"] >= v["tcp_syn_ns"]


def test_same_node_pod_to_pod_counted_once(dp: Datapath, pods: Pods, att: Attacher) -> None:
    att.attach(pods.topo.ifindex(pods.h1), pods.h1)
    att.attach(pods.topo.ifindex(pods.h2), pods.h2)
    before = dp.counters()
    count, size, port = 40, 200, 7000
    server = pods.spawn(pods.ns2, "udp-server", pods.addr2[4], port, count)
    sport = pods.run(pods.ns1, "udp-client", pods.addr2[4], port, count, size)["port"]
    assert pods.result(server)["received"] == count
    v, side = flow_entry(dp, pods.addr1[4], pods.addr2[4], sport, port, 17)
    assert v["dir"][side]["packets"] == count  # not 2 * count
    assert v["dir"][side]["bytes"] == count * (20 + 8 + size)
    after = dp.counters()
    assert after[Counter.DUPLICATE.name.lower()] - before["duplicate"] >= count
    assert after["counted"] - before["counted"] >= count
    assert v["dir"][side]["owner_ifindex"] == pods.topo.ifindex(pods.h1)


def test_topology_removes_everything_even_after_an_error() -> None:
    """The helper every traffic test relies on: nothing outlives a failing test."""
    with pytest.raises(RuntimeError, match="test failed"), Topology(prefix="ml") as topo:
        ns = topo.netns()
        host, _ = topo.veth(peer_ns=ns)
        br = topo.bridge()
        sleeper = topo.spawn_in(ns, ["sleep", "600"])
        raise RuntimeError("test failed")
    assert sleeper.poll() is not None
    assert not Path(f"/run/netns/{ns}").exists()
    for link in (host, br):
        assert subprocess.run(["ip", "link", "show", link], capture_output=True).returncode != 0
    assert not topo.leftovers
