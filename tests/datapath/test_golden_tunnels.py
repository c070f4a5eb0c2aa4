"""Golden tests: tunnels are opened so the flow is the inner conversation, with the outer
header recorded beside it; WireGuard, ESP and AH are flows of their own with their SPI."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH, ESP
from scapy.packet import Raw
from tests.datapath.packets import (
    L2,
    TC_ACT_UNSPEC,
    Conv,
    Harness,
    TcpOpts,
    addr16,
    ether,
    expected_key,
    geneve,
    gre,
    ip_in_ip,
    ip_len,
    only_flow,
    tcp,
    tcp_ip,
    udp,
    vxlan,
    wireguard,
)

from mermin.datapath.abi import Tunnel
from mermin.datapath.loader import Datapath, DatapathSettings

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]

INNER4 = Conv("172.16.0.2", "172.16.0.1", 33000, 8080)
INNER6 = Conv("fd10::2", "fd10::1", 33000, 8080)
OUTER4 = Conv("192.0.2.1", "192.0.2.2", 51000, 4789)
OUTER6 = Conv("2001:db8::1", "2001:db8::2", 52000, 6081)

DATAPATH_SETTINGS = DatapathSettings(pin=False, replay=True, flows_capacity=1024)


def check_tunnel(v, *, ttype: Tunnel, outer: Conv, proto: int, tid: int = 0, ports: bool = True):
    assert v["tunnel_type"] == ttype
    assert bytes(v["tunnel_src"]) == addr16(outer.src)
    assert bytes(v["tunnel_dst"]) == addr16(outer.dst)
    assert (v["tunnel_ip_version"], v["tunnel_protocol"], v["tunnel_id"]) == (
        outer.version, proto, tid,
    )  # fmt: skip
    want = (outer.sport, outer.dport) if ports else (0, 0)
    assert (v["tunnel_sport"], v["tunnel_dport"]) == want


@pytest.mark.parametrize("outer", [OUTER4, Conv("2001:db8::1", "2001:db8::2", 51000, 4789)],
                         ids=["outer-v4", "outer-v6"])  # fmt: skip
@pytest.mark.parametrize("inner", [INNER4, INNER6], ids=["inner-v4", "inner-v6"])
def test_vxlan_both_directions(h: Harness, outer: Conv, inner: Conv) -> None:
    fwd_inner = tcp(inner, TcpOpts("S"))
    rev_inner = tcp(inner.reply(), TcpOpts("SA", payload=b"r" * 33))
    fwd = vxlan(fwd_inner, outer, vni=0xABCDE)
    # the return path: another VTEP source port, same VNI
    rev = vxlan(rev_inner, Conv(outer.dst, outer.src, 50999, 4789), vni=0xABCDE)
    assert h.run(fwd) == h.run(rev) == TC_ACT_UNSPEC
    key, side = expected_key(inner, 6)
    v = only_flow(h, key)
    check_tunnel(v, ttype=Tunnel.VXLAN, outer=outer, proto=17, tid=0xABCDE)
    c, s = v["dir"][side], v["dir"][1 - side]
    assert (c["packets"], c["bytes"], c["tunnel_bytes"]) == (1, ip_len(fwd_inner), ip_len(fwd))
    assert (s["packets"], s["bytes"], s["tunnel_bytes"]) == (1, ip_len(rev_inner), ip_len(rev))
    assert v["tcp_state"] == 3 and c["tcp_flags"] == 0x02
    assert h.delta() == {"seen": 2, "counted": 2}


def test_vlan_inside_vxlan(h: Harness) -> None:
    inner = tcp(INNER4, TcpOpts("S"), l2=L2(vlans=(222, 333), outer_tpid=0x88A8))
    run = h.run(vxlan(inner, OUTER4, vni=5))
    assert run == TC_ACT_UNSPEC
    key, _ = expected_key(INNER4, 6)
    v = only_flow(h, key)
    assert (v["vlan_id"], v["tunnel_id"], v["tunnel_type"]) == (222, 5, Tunnel.VXLAN)


def test_outer_vlan_wins_over_inner(h: Harness) -> None:
    inner = tcp(INNER4, TcpOpts("S"), l2=L2(vlans=(222,)))
    frame = ether(vxlan(inner, OUTER4)[14:], L2(vlans=(10,)))
    assert h.run(frame) == TC_ACT_UNSPEC
    assert only_flow(h, expected_key(INNER4, 6)[0])["vlan_id"] == 10


def test_vxlan_custom_port_is_a_load_time_setting(require_root: None, bpf_object: Path) -> None:
    outer = Conv("192.0.2.1", "192.0.2.2", 51000, 8472)  # the Linux kernel's old default
    frame = vxlan(tcp(INNER4, TcpOpts("S")), outer)
    settings = DatapathSettings(pin=False, replay=True, flows_capacity=16, vxlan_port=8472)
    with Datapath.load(bpf_object, settings) as custom:
        h = Harness(custom)
        h.run(frame)
        v = only_flow(h, expected_key(INNER4, 6)[0])
        assert v["tunnel_type"] == Tunnel.VXLAN
    with Datapath.load(bpf_object, DatapathSettings(pin=False, flows_capacity=16)) as default:
        h = Harness(default)
        h.run(frame)  # 8472 is not a tunnel port by default: an outer UDP flow
        assert list(h.flows()) == [expected_key(outer, 17)[0]]


@pytest.mark.parametrize(
    ("proto", "inner"),
    [(0x6558, None), (0x0800, INNER4), (0x86DD, INNER6)],
    ids=["ethernet", "ipv4", "ipv6"],
)
def test_geneve_with_options(h: Harness, proto: int, inner: Conv | None) -> None:
    conv = inner or INNER4
    inner_ip = bytes(tcp_ip(conv, TcpOpts("PA", payload=b"g" * 50)))
    payload = tcp(conv, TcpOpts("PA", payload=b"g" * 50)) if proto == 0x6558 else inner_ip
    options = bytes.fromhex("0104 0102 deadbeef cafef00d 12345678")  # 20 bytes: 2 options
    frame = geneve(payload, OUTER6, vni=0x123456, proto=proto, options=options)
    assert h.run(frame) == TC_ACT_UNSPEC
    key, side = expected_key(conv, 6)
    v = only_flow(h, key)
    check_tunnel(v, ttype=Tunnel.GENEVE, outer=OUTER6, proto=17, tid=0x123456)
    assert (v["dir"][side]["bytes"], v["dir"][side]["tunnel_bytes"]) == (
        len(inner_ip), ip_len(frame),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("opts", "tid"),
    [
        ({}, 0),
        ({"key": 0xFEEDF00D}, 0xFEEDF00D),
        ({"key": 7, "csum": True}, 7),
        ({"key": 9, "csum": True, "seq": 1234}, 9),
        ({"seq": 55}, 0),
    ],
    ids=["plain", "key", "csum-key", "csum-key-seq", "seq"],
)
def test_gre_ip(h: Harness, opts: dict, tid: int) -> None:
    inner_ip = bytes(tcp_ip(INNER4, TcpOpts("S")))
    outer = Conv("198.51.100.1", "198.51.100.2", 0, 0)
    frame = gre(inner_ip, outer, 0x0800, **opts)
    assert h.run(frame) == TC_ACT_UNSPEC
    key, side = expected_key(INNER4, 6)
    v = only_flow(h, key)
    check_tunnel(v, ttype=Tunnel.GRE, outer=outer, proto=47, tid=tid, ports=False)
    assert (v["dir"][side]["bytes"], v["dir"][side]["tunnel_bytes"]) == (40, ip_len(frame))


def test_gre_transparent_ethernet_ipv6_outer(h: Harness) -> None:
    outer = Conv("2001:db8::a", "2001:db8::b", 0, 0)
    frame = gre(tcp(INNER6, TcpOpts("S"), l2=L2(vlans=(42,))), outer, 0x6558, key=1)
    assert h.run(frame) == TC_ACT_UNSPEC
    v = only_flow(h, expected_key(INNER6, 6)[0])
    check_tunnel(v, ttype=Tunnel.GRE, outer=outer, proto=47, tid=1, ports=False)
    assert v["vlan_id"] == 42


@pytest.mark.parametrize("version", [1, 0], ids=["pptp", "erspan"])
def test_gre_we_cannot_open_is_a_gre_flow(h: Harness, version: int) -> None:
    outer = Conv("198.51.100.1", "198.51.100.2", 0, 0)
    proto = 0x880B if version == 1 else 0x88BE  # PPP (enhanced GRE), ERSPAN
    frame = gre(bytes(40), outer, proto, key=3, version=version)
    assert h.run(frame) == TC_ACT_UNSPEC
    key, side = expected_key(outer, 47, ports=(0, 0))
    v = only_flow(h, key)
    assert (v["tunnel_type"], v["dir"][side]["bytes"]) == (0, ip_len(frame))


@pytest.mark.parametrize(
    ("inner", "outer", "ttype"),
    [
        (INNER4, OUTER4, Tunnel.IPIP),
        (INNER6, OUTER4, Tunnel.SIT),
        (INNER4, OUTER6, Tunnel.IP4IN6),
        (INNER6, OUTER6, Tunnel.IP6IP6),
    ],
    ids=["ipip", "sit", "4in6", "ip6ip6"],
)
def test_ip_in_ip(h: Harness, inner: Conv, outer: Conv, ttype: Tunnel) -> None:
    inner_ip = bytes(tcp_ip(inner, TcpOpts("A", payload=b"i" * 10)))
    frame = ip_in_ip(inner_ip, outer)
    back = ip_in_ip(bytes(tcp_ip(inner.reply(), TcpOpts("A"))), outer.reply())
    assert h.run(frame) == h.run(back) == TC_ACT_UNSPEC
    key, side = expected_key(inner, 6)
    v = only_flow(h, key)
    proto = 4 if inner.version == 4 else 41
    check_tunnel(v, ttype=ttype, outer=outer, proto=proto, ports=False)
    assert (v["dir"][side]["bytes"], v["dir"][side]["tunnel_bytes"]) == (
        len(inner_ip), ip_len(frame),
    )  # fmt: skip
    assert v["dir"][1 - side]["packets"] == 1


def test_one_tunnel_level_only(h: Harness) -> None:
    """VXLAN inside VXLAN: the first inner packet is the flow (a UDP flow to 4789)."""
    mid = Conv("10.200.0.1", "10.200.0.2", 40000, 4789)
    frame = vxlan(vxlan(tcp(INNER4, TcpOpts("S")), mid, vni=2), OUTER4, vni=1)
    assert h.run(frame) == TC_ACT_UNSPEC
    v = only_flow(h, expected_key(mid, 17)[0])
    assert (v["tunnel_type"], v["tunnel_id"]) == (Tunnel.VXLAN, 1)


def test_tunnel_inner_problems_are_counted(h: Harness) -> None:
    arp_inner = ether(bytes(28), ethertype=0x0806)
    cut = vxlan(tcp(INNER4, TcpOpts("S")), OUTER4)[: 14 + 20 + 8 + 8 + 14 + 10]
    geneve_cut = geneve(bytes(60), OUTER6, options=bytes(16))[: 14 + 40 + 8 + 12]
    for frame in (vxlan(arp_inner, OUTER4), cut, geneve_cut):
        assert h.run(frame) == TC_ACT_UNSPEC
    assert h.flows() == {}
    assert h.delta() == {"seen": 3, "unparsed_ethertype": 1, "unparsed_truncated": 2}


@pytest.mark.parametrize(
    ("msg_type", "spi"), [(4, 0xA1B2C3D4), (2, 0x01020304), (3, 0x55), (1, 0)],
    ids=["transport", "response", "cookie", "initiation"],
)  # fmt: skip
def test_wireguard_receiver_index(h: Harness, msg_type: int, spi: int) -> None:
    conv = Conv("203.0.113.5", "203.0.113.9", 51820, 51820)
    frame = wireguard(conv, msg_type, receiver=spi, sender=0x99)
    assert h.run(frame) == TC_ACT_UNSPEC
    key, side = expected_key(conv, 17)
    v = only_flow(h, key)
    assert (v["dir"][side]["spi"], v["tunnel_type"], v["dir"][side]["bytes"]) == (
        spi, 0, ip_len(frame),
    )  # fmt: skip


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_esp_and_ah_are_flows_with_spi(h: Harness, v6: bool) -> None:
    conv = Conv("2001:db8::5", "2001:db8::9") if v6 else Conv("192.0.2.5", "192.0.2.9")
    l3 = IPv6(src=conv.src, dst=conv.dst) if v6 else IP(src=conv.src, dst=conv.dst)
    esp = ether(l3.copy() / ESP(spi=0x1000, seq=1) / Raw(bytes(48)))
    esp_back = ether((IPv6 if v6 else IP)(src=conv.dst, dst=conv.src) / ESP(spi=0x2000, seq=1))
    ah = ether(l3.copy() / AH(spi=0x3000, seq=1, nh=6, icv=bytes(12)) / Raw(bytes(20)))
    for frame in (esp, esp_back, ah):
        assert h.run(frame) == TC_ACT_UNSPEC
    flows = h.flows()
    esp_key, side = expected_key(conv, 50, ports=(0, 0))
    ah_key, _ = expected_key(conv, 51, ports=(0, 0))
    assert set(flows) == {esp_key, ah_key}
    e = flows[esp_key]
    assert (e["dir"][side]["spi"], e["dir"][1 - side]["spi"]) == (0x1000, 0x2000)
    assert (e["dir"][side]["bytes"], flows[ah_key]["dir"][side]["spi"]) == (ip_len(esp), 0x3000)


def test_plain_udp_is_untouched_by_tunnel_logic(h: Harness) -> None:
    conv = Conv("10.0.0.1", "10.0.0.2", 4789, 5000)  # VXLAN port as *source*: not a tunnel
    assert h.run(udp(conv)) == TC_ACT_UNSPEC
    assert only_flow(h, expected_key(conv, 17)[0])["tunnel_type"] == 0
