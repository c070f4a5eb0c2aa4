"""Golden tests of the kernel program: crafted frames through BPF_PROG_TEST_RUN, exact FLOWS
entries and counters. Layer 2-4 parsing, key normalization, TCP, ICMP, malformed frames.

Tunnels: test_golden_tunnels.py. Fragments and IPv6 extension headers: test_golden_ip.py.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, IPerror, UDPerror
from scapy.layers.l2 import ARP, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Raw
from tests.datapath.packets import (
    L2,
    TC_ACT_UNSPEC,
    Conv,
    Harness,
    IpOpts,
    TcpOpts,
    addr16,
    ether,
    expected_key,
    icmp_echo,
    ip_len,
    ip_pkt,
    only_flow,
    tcp,
    udp,
)
from tests.helpers.netns import ip, netns

from mermin.datapath.abi import Hook
from mermin.datapath.loader import Datapath, DatapathSettings

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]

V4 = Conv("10.0.0.2", "10.0.0.1", 40000, 80)  # client has the higher address: side b
V6 = Conv("fd00::1", "fd00::2", 40000, 443)  # client has the lower address: side a

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
CLOSED, SYN_SENT, SYN_RECEIVED, ESTABLISHED = 0, 2, 3, 4
FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, LAST_ACK, TIME_WAIT = 5, 6, 7, 9, 10


def run_all(h: Harness, frames: list[tuple[bytes, str]]) -> list[int]:
    """Run (frame, hook) pairs at tstamps 1000, 2000, ... ns; all must return TC_ACT_UNSPEC."""
    rets = [h.run(f, hook, tstamp=1000 * (i + 1)) for i, (f, hook) in enumerate(frames)]
    assert rets == [TC_ACT_UNSPEC] * len(frames)
    return rets


# --------------------------------------------------------------------------------------------
# TCP
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv", [V4, V6], ids=["ipv4", "ipv6"])
def test_tcp_handshake_data_close(h: Harness, conv: Conv) -> None:
    srv = conv.reply()
    ipo = IpOpts(tos=(10 << 2) | 1, ttl=61, flow_label=0x12345)
    sipo = IpOpts(tos=(46 << 2) | 2, ttl=63, flow_label=0xABCDE)
    frames = [
        tcp(conv, TcpOpts("S", seq=100), ipo),
        tcp(srv, TcpOpts("SA", seq=5000, ack=101), sipo),
        tcp(conv, TcpOpts("A", seq=101, ack=5001), ipo),
        tcp(conv, TcpOpts("PA", seq=101, ack=5001, payload=b"x" * 100), ipo),
        tcp(srv, TcpOpts("PA", seq=5001, ack=201, payload=b"y" * 300), sipo),
        tcp(conv, TcpOpts("FA", seq=201, ack=5301), ipo),
        tcp(srv, TcpOpts("A", seq=5301, ack=202), sipo),
    ]
    hooks = ["egress", "ingress", "egress", "egress", "ingress", "egress", "ingress"]
    run_all(h, list(zip(frames, hooks, strict=True)))

    key, side = expected_key(conv, 6)
    v = only_flow(h, key)
    c, s = v["dir"][side], v["dir"][1 - side]
    assert (v["first_seen_ns"], v["last_seen_ns"]) == (1000, 7000)
    assert (v["tcp_syn_ns"], v["tcp_synack_ns"]) == (1000, 2000)
    assert (v["first_side"], v["first_hook"], v["ifindex"]) == (side, Hook.EGRESS, 1)
    assert v["tcp_state"] == FIN_WAIT_2
    assert (v["vlan_id"], v["tunnel_type"]) == (0, 0)
    sent = [ip_len(f) for f in frames]
    assert (c["packets"], c["bytes"]) == (4, sent[0] + sent[2] + sent[3] + sent[5])
    assert (s["packets"], s["bytes"]) == (3, sent[1] + sent[4] + sent[6])
    assert (c["tcp_flags"], s["tcp_flags"]) == (SYN | ACK | PSH | FIN, SYN | ACK | PSH)
    assert (c["retransmits"], s["retransmits"]) == (0, 0)
    assert (c["seq_next"], s["seq_next"]) == (201, 5301)
    assert (c["dscp"], c["ecn"], c["ttl"]) == (10, 1, 61)
    assert (s["dscp"], s["ecn"], s["ttl"]) == (46, 2, 63)
    want_labels = (0x12345, 0xABCDE) if conv.version == 6 else (0, 0)
    assert (c["flow_label"], s["flow_label"]) == want_labels
    assert (c["owner_ifindex"], c["owner_hook"]) == (1, Hook.EGRESS)
    assert (s["owner_ifindex"], s["owner_hook"]) == (1, Hook.INGRESS)
    assert (c["tunnel_bytes"], c["spi"], c["icmp_type"]) == (0, 0, 0)
    assert h.delta() == {"seen": 7, "counted": 7}


def test_key_normalization_orders_address_then_port(h: Harness) -> None:
    """Same addresses: the lower port is side a; otherwise the lower address wins."""
    same = Conv("10.9.9.9", "10.9.9.9", 5000, 4000)
    run_all(h, [(udp(same), "ingress"), (udp(same.reply()), "ingress")])
    key = (addr16("10.9.9.9"), addr16("10.9.9.9"), 4000, 5000, 4, 17)
    v = only_flow(h, key)
    assert v["first_side"] == 1  # the sender of the first packet had port 5000: side b
    assert (v["dir"][0]["packets"], v["dir"][1]["packets"]) == (1, 1)
    h.reset()
    # 10.0.0.10 > 9.255.255.255 as bytes even though "1" < "9" as text
    conv = Conv("10.0.0.10", "9.255.255.255", 1, 65535)
    run_all(h, [(udp(conv), "ingress")])
    key = (addr16("9.255.255.255"), addr16("10.0.0.10"), 65535, 1, 4, 17)
    assert only_flow(h, key)["first_side"] == 1


@pytest.mark.parametrize("conv", [V4, V6], ids=["ipv4", "ipv6"])
def test_tcp_retransmits_with_wraparound(h: Harness, conv: Conv) -> None:
    top = 2**32 - 50
    frames = [
        tcp(conv, TcpOpts("A", seq=top, payload=b"a" * 40)),  # ends at 2^32 - 10
        tcp(conv, TcpOpts("A", seq=top, payload=b"a" * 40)),  # same segment: retransmit
        tcp(conv, TcpOpts("A", seq=top + 40, payload=b"b" * 60)),  # wraps to 50: new
        tcp(conv, TcpOpts("A", seq=top + 40, payload=b"b" * 20)),  # inside sent space
        tcp(conv, TcpOpts("A", seq=40, payload=b"c" * 20)),  # 40..60: partly new
        tcp(conv, TcpOpts("A", seq=60)),  # no payload: never a retransmit
    ]
    run_all(h, [(f, "ingress") for f in frames])
    key, side = expected_key(conv, 6)
    d = only_flow(h, key)["dir"][side]
    assert (d["packets"], d["retransmits"], d["seq_next"], d["seq_valid"]) == (6, 2, 60, 1)


def test_tcp_state_passive_close_and_reset(h: Harness) -> None:
    srv = V4.reply()
    steps = [
        (tcp(V4, TcpOpts("S")), SYN_SENT),
        (tcp(srv, TcpOpts("SA")), SYN_RECEIVED),
        (tcp(V4, TcpOpts("A")), ESTABLISHED),
        (tcp(srv, TcpOpts("FA")), CLOSE_WAIT),  # the server closes first
        (tcp(V4, TcpOpts("FA")), LAST_ACK),
        (tcp(srv, TcpOpts("A")), CLOSED),
    ]
    key, _ = expected_key(V4, 6)
    for frame, state in steps:
        h.run(frame)
        assert only_flow(h, key)["tcp_state"] == state
    h.reset()
    steps = [
        (tcp(V4, TcpOpts("PA", payload=b"mid-stream")), ESTABLISHED),  # joined late
        (tcp(V4, TcpOpts("FA")), FIN_WAIT_1),
        (tcp(srv, TcpOpts("FA")), TIME_WAIT),
        (tcp(srv, TcpOpts("R")), CLOSED),
        (tcp(V4, TcpOpts("A")), CLOSED),  # a straggler after a reset does not revive it
        (tcp(V4, TcpOpts("S")), SYN_SENT),  # port reuse
    ]
    for frame, state in steps:
        h.run(frame)
        assert only_flow(h, key)["tcp_state"] == state


def test_gso_super_packet_counts_its_segments(h: Harness) -> None:
    frame = tcp(V4, TcpOpts("A", payload=b"z" * 3000))
    assert h.run(frame, gso_segs=3) == TC_ACT_UNSPEC
    key, side = expected_key(V4, 6)
    d = only_flow(h, key)["dir"][side]
    # three wire packets of 1000 payload bytes each carry their own 20 + 20 header bytes
    assert (d["packets"], d["bytes"]) == (3, 3000 + 3 * 40)


# --------------------------------------------------------------------------------------------
# UDP, SCTP, other protocols, ICMP
# --------------------------------------------------------------------------------------------
def test_udp_both_directions(h: Harness) -> None:
    conv = Conv("192.168.1.1", "192.168.1.53", 53000, 53)
    q, r = udp(conv, b"q" * 30), udp(conv.reply(), b"r" * 120)
    run_all(h, [(q, "egress"), (r, "ingress"), (q, "egress")])
    key, side = expected_key(conv, 17)
    v = only_flow(h, key)
    assert (v["dir"][side]["packets"], v["dir"][side]["bytes"]) == (2, 2 * (20 + 8 + 30))
    assert (v["dir"][1 - side]["packets"], v["dir"][1 - side]["bytes"]) == (1, 20 + 8 + 120)
    assert v["tcp_state"] == 0 and v["tcp_syn_ns"] == 0
    assert h.delta() == {"seen": 3, "counted": 3}


@pytest.mark.parametrize("conv", [V4, V6], ids=["ipv4", "ipv6"])
def test_sctp_ports(h: Harness, conv: Conv) -> None:
    frame = ether(ip_pkt(conv) / SCTP(sport=conv.sport, dport=conv.dport))
    run_all(h, [(frame, "ingress")])
    key, side = expected_key(conv, 132)
    assert only_flow(h, key)["dir"][side]["packets"] == 1


def test_other_ip_protocol_has_no_ports(h: Harness) -> None:
    ospf = ether(ip_pkt(V4, proto=89) / Raw(b"\x02\x01" + bytes(40)))
    run_all(h, [(ospf, "ingress")])
    key, _ = expected_key(V4, 89, ports=(0, 0))
    assert only_flow(h, key)["dir"][0]["packets"] + only_flow(h, key)["dir"][1]["packets"] == 1


@pytest.mark.parametrize("conv", [V4, V6], ids=["ipv4", "ipv6"])
def test_icmp_echo_request_and_reply_are_one_flow(h: Harness, conv: Conv) -> None:
    req, rep = icmp_echo(conv, 0x4242), icmp_echo(conv.reply(), 0x4242, reply=True)
    run_all(h, [(req, "egress"), (rep, "ingress"), (req, "egress")])
    proto = 1 if conv.version == 4 else 58
    key, side = expected_key(conv, proto, ports=(0x4242, 0x4242))
    v = only_flow(h, key)
    c, s = v["dir"][side], v["dir"][1 - side]
    types = (8, 0) if conv.version == 4 else (128, 129)
    assert (c["packets"], c["icmp_type"], c["icmp_code"]) == (2, types[0], 0)
    assert (s["packets"], s["icmp_type"], s["icmp_code"]) == (1, types[1], 0)
    assert c["bytes"] == ip_len(req) * 2


def test_icmp_error_has_ports_zero_and_type_code(h: Harness) -> None:
    quoted = IPerror(src="10.0.0.1", dst="10.0.0.2") / UDPerror(sport=1, dport=2)
    err = ether(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=3) / quoted)
    run_all(h, [(err, "ingress")])
    key, side = expected_key(V4, 1, ports=(0, 0))
    d = only_flow(h, key)["dir"][side]
    assert (d["packets"], d["icmp_type"], d["icmp_code"]) == (1, 3, 3)


def test_icmp_timestamp_query_uses_identifier(h: Harness) -> None:
    frame = ether(IP(src=V4.src, dst=V4.dst) / ICMP(type=13, id=77))
    run_all(h, [(frame, "ingress")])
    key, _ = expected_key(V4, 1, ports=(77, 77))
    assert only_flow(h, key)["dir"][1]["icmp_type"] == 13


# --------------------------------------------------------------------------------------------
# Layer 2
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("l2", "vlan"),
    [
        (L2(vlans=(100,)), 100),
        (L2(vlans=(300, 200), outer_tpid=0x88A8), 300),  # QinQ: the outer (service) tag
        (L2(vlans=(5, 6), outer_tpid=0x8100), 5),  # double 802.1Q
        (L2(vlans=(7, 8, 9), outer_tpid=0x88A8), 7),  # three tags: still walked
    ],
    ids=["dot1q", "qinq", "double-dot1q", "three-tags"],
)
def test_vlan_tags(h: Harness, l2: L2, vlan: int) -> None:
    frame = tcp(V6, TcpOpts("S"), l2=l2)
    run_all(h, [(frame, "ingress")])
    key, side = expected_key(V6, 6)
    v = only_flow(h, key)
    assert (v["vlan_id"], v["dir"][side]["bytes"]) == (vlan, ip_len(frame, 14 + 4 * len(l2.vlans)))


def test_too_many_vlan_tags(h: Harness) -> None:
    run_all(h, [(tcp(V4, l2=L2(vlans=(1, 2, 3, 4))), "ingress")])
    assert h.flows() == {}
    assert h.delta() == {"seen": 1, "unparsed_too_deep": 1}


def test_ipv4_options_honour_ihl(h: Harness) -> None:
    opts = IpOpts(options=b"\x07\x07\x04" + bytes(4) + b"\x01")  # record route + NOP: 8 bytes
    frame = tcp(V4, TcpOpts("S", payload=b"p" * 10), opts)
    assert frame[14] == 0x47  # IHL 7
    run_all(h, [(frame, "ingress")])
    key, side = expected_key(V4, 6)
    d = only_flow(h, key)["dir"][side]
    assert (d["bytes"], d["tcp_flags"], d["seq_next"]) == (28 + 20 + 10, SYN, 1010)


def test_non_ip_frames_are_unparsed_ethertype(h: Harness) -> None:
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    lldp = bytes(Ether(dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(bytes(30)))
    stp = bytes(Ether(dst="01:80:c2:00:00:00", type=38) / Raw(bytes(38)))  # 802.3 length
    run_all(h, [(arp, "ingress"), (lldp, "ingress"), (stp, "egress")])
    assert h.flows() == {}
    assert h.delta() == {"seen": 3, "unparsed_ethertype": 3}


def _corrupt(frame: bytes, offset: int, value: int) -> bytes:
    return frame[:offset] + bytes([value]) + frame[offset + 1 :]


# BPF_PROG_TEST_RUN itself refuses a frame typed IPv4/IPv6 shorter than that IP header, so
# headers cut inside the IP header are fed behind a VLAN tag (then the kernel does not look).
TAG = L2(vlans=(1,))
TAGGED = 18


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (tcp(V4, l2=TAG)[: TAGGED + 12], "unparsed_truncated"),  # IPv4 header cut
        (tcp(V4)[: 14 + 20 + 10], "unparsed_truncated"),  # TCP header cut
        (tcp(V6, l2=TAG)[: TAGGED + 30], "unparsed_truncated"),  # IPv6 header cut
        (tcp(V6)[: 14 + 40 + 12], "unparsed_truncated"),
        (tcp(V4, l2=TAG)[:16], "unparsed_truncated"),  # VLAN tag cut
        (_corrupt(tcp(V4), 14, 0x65), "unparsed_protocol"),  # version 6 in an IPv4 frame
        (_corrupt(tcp(V4), 14, 0x44), "unparsed_protocol"),  # IHL 4
        (_corrupt(_corrupt(tcp(V4), 16, 0), 17, 10), "unparsed_protocol"),  # total < IHL
        (_corrupt(tcp(V4), 14 + 20 + 12, 0x40), "unparsed_protocol"),  # TCP doff 4
        (_corrupt(tcp(V4, TcpOpts(payload=bytes(100))), 14, 0x4F)[:54], "unparsed_truncated"),
        (_corrupt(tcp(V6), 14, 0x45), "unparsed_protocol"),  # version 4 in an IPv6 frame
        (icmp_echo(V4, 1)[: 14 + 20 + 6], "unparsed_truncated"),  # echo without identifier
        (icmp_echo(V4, 1)[: 14 + 20 + 3], "unparsed_truncated"),  # no type/code
    ],
    ids=["ipv4-cut", "tcp-cut", "ipv6-cut", "tcp6-cut", "vlan-cut", "bad-version", "ihl-4",
         "total-lt-ihl", "doff-4", "ihl-past-end", "v6-bad-version", "icmp-echo-cut",
         "icmp-cut"],
)  # fmt: skip
def test_malformed_and_truncated(h: Harness, frame: bytes, reason: str) -> None:
    assert h.run(frame) == TC_ACT_UNSPEC
    assert h.flows() == {}
    assert h.delta() == {"seen": 1, reason: 1}


def test_truncated_capture_counts_ip_length(h: Harness) -> None:
    """A frame cut after the TCP header (snaplen) still counts the IP total length."""
    frame = tcp(V4, TcpOpts("A", payload=b"d" * 500))[: 14 + 40]
    run_all(h, [(frame, "ingress")])
    key, side = expected_key(V4, 6)
    assert only_flow(h, key)["dir"][side]["bytes"] == 540


def test_tiny_frames_never_crash(h: Harness) -> None:
    for n in (14, 15, 17, 20, 33):
        assert h.run(tcp(V4, l2=TAG)[:n]) == TC_ACT_UNSPEC
    assert h.delta() == {"seen": 5, "unparsed_truncated": 5}


# --------------------------------------------------------------------------------------------
# Dedup, map full, live clock
# --------------------------------------------------------------------------------------------
def _in_netns(ns: str, fn):
    """Run fn() on a thread that entered network namespace `ns` (setns is per thread)."""
    result: dict[str, object] = {}

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


def test_dedup_packet_seen_at_two_hooks_counts_once(h: Harness) -> None:
    """Pod A's veth ingress (ifindex 5) then pod B's veth egress (ifindex 7): one packet."""
    with netns("mk") as ns:
        ip("link", "add", "mkv5", "index", "5", "type", "veth", "peer", "mkv7", "index", "7",
           ns=ns)  # fmt: skip
        req, rep = tcp(V4, TcpOpts("S")), tcp(V4.reply(), TcpOpts("SA"))

        def traffic() -> list[int]:
            return [
                h.run(req, "ingress", ifindex=5, tstamp=10),
                h.run(req, "egress", ifindex=7, tstamp=11),
                h.run(rep, "ingress", ifindex=7, tstamp=20),  # the reply: pod B's veth first
                h.run(rep, "egress", ifindex=5, tstamp=21),
                h.run(req, "ingress", ifindex=5, tstamp=30),
                h.run(req, "egress", ifindex=7, tstamp=31),
            ]

        assert _in_netns(ns, traffic) == [TC_ACT_UNSPEC] * 6
    key, side = expected_key(V4, 6)
    v = only_flow(h, key)
    c, s = v["dir"][side], v["dir"][1 - side]
    assert (c["packets"], c["owner_ifindex"], c["owner_hook"]) == (2, 5, Hook.INGRESS)
    assert (s["packets"], s["owner_ifindex"], s["owner_hook"]) == (1, 7, Hook.INGRESS)
    assert (v["ifindex"], v["first_hook"], v["last_seen_ns"]) == (5, Hook.INGRESS, 30)
    assert h.delta() == {"seen": 6, "counted": 3, "duplicate": 3}


def test_map_full_is_counted(require_root: None, bpf_object: Path) -> None:
    settings = DatapathSettings(pin=False, replay=True, flows_capacity=2)
    with Datapath.load(bpf_object, settings) as small:
        h = Harness(small)
        h.reset()
        for port in range(1, 5):
            assert h.run(udp(Conv(sport=port))) == TC_ACT_UNSPEC
        assert h.run(udp(Conv(sport=1))) == TC_ACT_UNSPEC  # an existing flow still counts
        assert len(h.flows()) == 2
        assert h.delta() == {"seen": 5, "counted": 3, "map_full": 2}


def test_live_clock_is_boottime(require_root: None, bpf_object: Path) -> None:
    settings = DatapathSettings(pin=False, replay=False, flows_capacity=16)
    with Datapath.load(bpf_object, settings) as live:
        h = Harness(live)
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        h.run(tcp(V4, TcpOpts("S")), tstamp=0)
        h.run(tcp(V4.reply(), TcpOpts("SA")), tstamp=0)
        after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        v = only_flow(h, expected_key(V4, 6)[0])
        assert before <= v["first_seen_ns"] <= v["tcp_syn_ns"] <= v["tcp_synack_ns"] <= after
        # the SYN opened the flow: its time is first_seen itself (how userspace knows the
        # handshake was seen from the start), not a second clock read
        assert v["tcp_syn_ns"] == v["first_seen_ns"]
        # last_seen reads the clock at most once per jiffy: never before first_seen, and
        # at most one tick (<= 10 ms at HZ=100) older than the packet
        assert v["first_seen_ns"] <= v["last_seen_ns"] <= after


def test_udp_tunnel_ports_and_others_on_the_fast_path_agree(h: Harness) -> None:
    """UDP to port 4789 without the VXLAN I flag stays a UDP flow (general walk)."""
    conv = Conv("10.1.1.1", "10.1.1.2", 1234, 4789)
    run_all(h, [(udp(conv, bytes(8) + b"x" * 20), "ingress")])
    key, side = expected_key(conv, 17)
    assert only_flow(h, key)["tunnel_type"] == 0
    assert only_flow(h, key)["dir"][side]["bytes"] == 20 + 8 + 28


def test_stock_bpftool_loads_the_object_with_defaults(require_root: None, bpf_object: Path) -> None:
    """What a user does to inspect it: `bpftool prog loadall OBJ /sys/fs/bpf/DIR`."""
    pin = Path(f"/sys/fs/bpf/mk_{os.getpid()}_{threading.get_ident() % 10000}")
    try:
        subprocess.run(["bpftool", "prog", "loadall", str(bpf_object), str(pin)],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        assert sorted(p.name for p in pin.iterdir()) == ["mermin_egress", "mermin_ingress"]
    finally:
        shutil.rmtree(pin, ignore_errors=True)
    assert not pin.exists()
