"""Community ID v1 against the reference implementation (`communityid` on PyPI)."""

from __future__ import annotations

import socket

import communityid
import pytest

from mermin.flows.community_id import CommunityIdHasher, community_id


def _packed(addr: str) -> bytes:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return socket.inet_pton(family, addr)


def _reference(seed: int, proto: int, saddr: str, daddr: str, sport: int, dport: int) -> str:
    return communityid.CommunityID(seed=seed).calc(
        communityid.FlowTuple(proto, saddr, daddr, sport, dport)
    )


V4 = ("10.0.0.1", "192.168.7.20")
V6 = ("2001:db8::1", "fe80::aa:1")

PORT_CASES = [
    (6, 34567, 443),
    (17, 53, 53000),
    (132, 38412, 38412),
    (6, 80, 80),
]


@pytest.mark.parametrize("seed", [0, 1, 4242, 65535])
@pytest.mark.parametrize("addrs", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize("proto,sport,dport", PORT_CASES)
def test_ported_protocols_match_reference_both_ways(seed, addrs, proto, sport, dport):
    s, d = addrs
    hasher = CommunityIdHasher(seed)
    forward = hasher(proto, _packed(s), _packed(d), sport, dport)
    backward = hasher(proto, _packed(d), _packed(s), dport, sport)
    assert forward == backward == _reference(seed, proto, s, d, sport, dport)


ICMP4_PAIRS = [(8, 0), (13, 14), (15, 16), (17, 18), (10, 9)]
ICMP6_PAIRS = [(128, 129), (130, 131), (133, 134), (135, 136)]


@pytest.mark.parametrize("seed", [0, 9])
@pytest.mark.parametrize(
    "proto,addrs,pair",
    [(1, V4, p) for p in ICMP4_PAIRS] + [(58, V6, p) for p in ICMP6_PAIRS],
)
def test_icmp_request_and_reply_share_the_reference_id(seed, proto, addrs, pair):
    s, d = addrs
    request, reply = pair
    hasher = CommunityIdHasher(seed)
    req = hasher(proto, _packed(s), _packed(d), request, 0)
    rep = hasher(proto, _packed(d), _packed(s), reply, 0)
    assert req == rep
    assert req == _reference(seed, proto, s, d, request, 0)
    assert rep == _reference(seed, proto, d, s, reply, 0)


@pytest.mark.parametrize(
    "proto,addrs,itype,icode", [(1, V4, 3, 3), (1, V4, 11, 0), (58, V6, 1, 4), (58, V6, 2, 0)]
)
def test_icmp_errors_are_one_way(proto, addrs, itype, icode):
    s, d = addrs
    hasher = CommunityIdHasher(3)
    fwd = hasher(proto, _packed(s), _packed(d), itype, icode)
    assert fwd == _reference(3, proto, s, d, itype, icode)
    assert fwd != hasher(proto, _packed(d), _packed(s), itype, icode)


@pytest.mark.parametrize("proto", [47, 50, 51])
def test_portless_protocols(proto):
    s, d = V4
    ref = communityid.CommunityID(seed=7).calc(communityid.FlowTuple(proto, s, d))
    assert community_id(proto, _packed(s), _packed(d), seed=7) == ref
    assert community_id(proto, _packed(d), _packed(s), seed=7) == ref


def test_seed_out_of_range_is_rejected():
    with pytest.raises(ValueError):
        CommunityIdHasher(70000)


def test_vectorised_batch_matches_the_reference_for_random_keys():
    import numpy as np

    from mermin.datapath.abi import KEY_DTYPE
    from mermin.flows.community_id import community_ids

    rng = np.random.default_rng(1)
    n = 400
    keys = np.zeros(n, KEY_DTYPE)
    v6 = rng.random(n) < 0.5
    keys["ip_version"] = np.where(v6, 6, 4)
    keys["protocol"] = rng.choice([6, 17, 132, 47, 50], n)
    for side in ("addr_a", "addr_b"):
        raw = rng.integers(0, 4, (n, 16), dtype=np.uint8)  # small values: many equal addresses
        raw[~v6, 4:] = 0
        keys[side] = raw
    keys["port_a"] = rng.integers(0, 3, n)
    keys["port_b"] = rng.integers(0, 3, n)
    got = community_ids(keys, seed=77)
    for k, cid in zip(keys, got, strict=True):
        ver, proto = int(k["ip_version"]), int(k["protocol"])
        alen = 4 if ver == 4 else 16
        sa = bytes(k["addr_a"][:alen])
        da = bytes(k["addr_b"][:alen])
        if proto in (6, 17, 132):
            tpl = communityid.FlowTuple(proto, sa, da, int(k["port_a"]), int(k["port_b"]))
        else:
            tpl = communityid.FlowTuple(proto, sa, da)
        assert cid == communityid.CommunityID(seed=77).calc(tpl)
