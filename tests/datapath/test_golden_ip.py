"""Golden tests: IPv4/IPv6 fragments (FRAGS) and the IPv6 extension-header chain."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
)
from scapy.layers.ipsec import AH
from scapy.packet import Raw
from tests.datapath.packets import (
    TC_ACT_UNSPEC,
    Conv,
    Harness,
    IpOpts,
    TcpOpts,
    ether,
    expected_key,
    fragments,
    ip_len,
    only_flow,
    tcp,
)

from mermin.datapath.loader import DatapathSettings

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]

V4 = Conv("10.1.0.1", "10.1.0.2", 5353, 9999)
V6 = Conv("fd00::a", "fd00::b", 5353, 9999)

DATAPATH_SETTINGS = DatapathSettings(pin=False, replay=True, flows_capacity=1024, frags_capacity=64)


# --------------------------------------------------------------------------------------------
# Fragments
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv", [V4, V6], ids=["ipv4", "ipv6"])
def test_fragments_in_order_join_the_flow(h: Harness, conv: Conv) -> None:
    msg = UDP(sport=conv.sport, dport=conv.dport) / Raw(b"f" * 2992)  # 3000 bytes of UDP
    frags = fragments(conv, msg, (1480, 1480, 40), frag_id=0x1234ABCD if conv.version == 6
                      else 0xBEEF)  # fmt: skip
    for f in frags:
        assert h.run(f) == TC_ACT_UNSPEC
    key, side = expected_key(conv, 17)
    d = only_flow(h, key)["dir"][side]
    assert (d["packets"], d["bytes"]) == (3, sum(ip_len(f) for f in frags))
    assert h.delta() == {"seen": 3, "counted": 3}


@pytest.mark.parametrize("conv", [V4, V6], ids=["ipv4", "ipv6"])
def test_fragments_out_of_order(h: Harness, conv: Conv) -> None:
    """A fragment that arrives before its first fragment cannot be placed: FRAG_UNMATCHED,
    never a flow with invented ports; the ones after the first join the flow."""
    msg = TCP(sport=conv.sport, dport=conv.dport, flags="PA") / Raw(b"t" * 2980)
    first, middle, last = fragments(conv, msg, (1000, 1000, 1000), frag_id=4242)
    for f in (last, first, middle):
        assert h.run(f) == TC_ACT_UNSPEC
    key, side = expected_key(conv, 6)
    d = only_flow(h, key)["dir"][side]
    assert (d["packets"], d["bytes"]) == (2, ip_len(first) + ip_len(middle))
    assert d["tcp_flags"] == 0x18  # from the first fragment only
    assert h.delta() == {"seen": 3, "counted": 2, "frag_unmatched": 1}


def test_fragment_ids_do_not_mix(h: Harness) -> None:
    """Two datagrams of one address pair with different ids: each later fragment finds its
    own first fragment; an unknown id is unmatched."""
    a = fragments(V4, UDP(sport=1, dport=2) / Raw(bytes(92)), (48, 52), frag_id=1)
    b = fragments(V4, UDP(sport=3, dport=4) / Raw(bytes(92)), (48, 52), frag_id=2)
    c = fragments(V4, UDP(sport=5, dport=6) / Raw(bytes(92)), (48, 52), frag_id=3)
    for f in (a[0], b[0], b[1], a[1], c[1]):
        assert h.run(f) == TC_ACT_UNSPEC
    flows = h.flows()
    ka, _ = expected_key(V4, 17, ports=(1, 2))
    kb, _ = expected_key(V4, 17, ports=(3, 4))
    assert set(flows) == {ka, kb}
    assert [flows[k]["dir"][0]["packets"] for k in (ka, kb)] == [2, 2]
    assert h.delta() == {"seen": 5, "counted": 4, "frag_unmatched": 1}


def test_fragmented_icmp_echo_keeps_its_identifier(h: Harness) -> None:
    frags = fragments(V4, ICMP(type=8, id=321) / Raw(bytes(1992)), (1000, 1000), frag_id=9)
    frags6 = fragments(V6, ICMPv6EchoRequest(id=654) / Raw(bytes(1992)), (1000, 1000),
                       frag_id=9)  # fmt: skip
    for f in frags + frags6:
        assert h.run(f) == TC_ACT_UNSPEC
    flows = h.flows()
    k4, s4 = expected_key(V4, 1, ports=(321, 321))
    k6, s6 = expected_key(V6, 58, ports=(654, 654))
    assert flows[k4]["dir"][s4]["packets"] == 2 and flows[k4]["dir"][s4]["icmp_type"] == 8
    assert flows[k6]["dir"][s6]["packets"] == 2 and flows[k6]["dir"][s6]["icmp_type"] == 128


def test_atomic_ipv6_fragment_is_a_whole_packet(h: Harness) -> None:
    """Offset 0 without M (RFC 6946): parsed as a complete datagram."""
    frame = ether(IPv6(src=V6.src, dst=V6.dst) / IPv6ExtHdrFragment(m=0, offset=0, id=5)
                  / UDP(sport=V6.sport, dport=V6.dport) / Raw(bytes(10)))  # fmt: skip
    assert h.run(frame) == TC_ACT_UNSPEC
    assert only_flow(h, expected_key(V6, 17)[0])["dir"][0]["packets"] == 1
    assert h.delta() == {"seen": 1, "counted": 1}


# --------------------------------------------------------------------------------------------
# IPv6 extension headers
# --------------------------------------------------------------------------------------------
SRH = IPv6ExtHdrSegmentRouting(addresses=["fd00::1:1", "fd00::1:2", "fd00::1:3"])


@pytest.mark.parametrize(
    "ext",
    [
        (IPv6ExtHdrHopByHop(),),
        (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=["fd00::9"])),
        (SRH,),
        (IPv6ExtHdrHopByHop(), SRH, IPv6ExtHdrDestOpt()),
        tuple(IPv6ExtHdrDestOpt() for _ in range(8)),  # exactly MAX_IPV6_EXT
    ],
    ids=["hbh", "hbh-dst-rt", "srh", "hbh-srh-dst", "eight"],
)
def test_extension_chain_reaches_tcp(h: Harness, ext: tuple) -> None:
    frame = tcp(V6, TcpOpts("S", payload=b"e" * 7), IpOpts(ext=ext, flow_label=77))
    assert h.run(frame) == TC_ACT_UNSPEC
    key, side = expected_key(V6, 6)
    d = only_flow(h, key)["dir"][side]
    assert (d["bytes"], d["tcp_flags"], d["flow_label"]) == (ip_len(frame), 0x02, 77)
    assert d["seq_next"] == 1007  # payload length excludes the extension headers


def test_too_many_extension_headers(h: Harness) -> None:
    ext = tuple(IPv6ExtHdrDestOpt() for _ in range(9))
    assert h.run(tcp(V6, TcpOpts("S"), IpOpts(ext=ext))) == TC_ACT_UNSPEC
    assert h.flows() == {}
    assert h.delta() == {"seen": 1, "unparsed_too_deep": 1}


def test_truncated_extension_header(h: Harness) -> None:
    frame = tcp(V6, TcpOpts("S"), IpOpts(ext=(SRH,)))[: 14 + 40 + 20]  # SRH is 56 bytes
    assert h.run(frame) == TC_ACT_UNSPEC
    assert h.delta() == {"seen": 1, "unparsed_truncated": 1}


def test_ah_in_the_chain_is_an_ah_flow(h: Harness) -> None:
    frame = ether(IPv6(src=V6.src, dst=V6.dst) / IPv6ExtHdrHopByHop()
                  / AH(spi=0xAB, nh=6, icv=bytes(12)) / TCP())  # fmt: skip
    assert h.run(frame) == TC_ACT_UNSPEC
    key, side = expected_key(V6, 51, ports=(0, 0))
    assert only_flow(h, key)["dir"][side]["spi"] == 0xAB


def test_fragment_after_extension_headers(h: Harness) -> None:
    msg = UDP(sport=V6.sport, dport=V6.dport) / Raw(bytes(192))
    whole = bytes(IPv6(src=V6.src, dst=V6.dst) / msg)[40:]
    first = ether(
        IPv6(src=V6.src, dst=V6.dst)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrFragment(nh=17, m=1, offset=0, id=77)
        / Raw(whole[:104])
    )
    later = ether(
        IPv6(src=V6.src, dst=V6.dst)
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrFragment(nh=17, m=0, offset=13, id=77)
        / Raw(whole[104:])
    )
    for f in (first, later):
        assert h.run(f) == TC_ACT_UNSPEC
    d = only_flow(h, expected_key(V6, 17)[0])["dir"][0]
    assert (d["packets"], d["bytes"]) == (2, ip_len(first) + ip_len(later))
