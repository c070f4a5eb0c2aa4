"""Direction rules on simulated kernel entries: handshake, ICMP, listeners, ports, first packet."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from tests.flows.sim import ACK, SYN, SimFlowMap

from mermin.config.span import SpanConfig
from mermin.flows.direction import DirectionResolver, span_kind
from mermin.flows.listening import WILDCARD, NodeSockets
from mermin.flows.record import SpanKind

C, SV = "10.0.0.200", "10.0.0.3"  # the client has the higher address: it lands on side b


def resolve(m: SimFlowMap, sockets: NodeSockets | None = None):
    keys, values = m.read_all()
    resolver = DirectionResolver((lambda: sockets) if sockets else None)
    src_is_b, determined = resolver.resolve(keys, values)
    return keys, src_is_b, determined


def initiator(keys, src_is_b, i=0) -> str:
    side = "addr_b" if src_is_b[i] else "addr_a"
    return socket.inet_ntop(socket.AF_INET, bytes(keys[side][i][:4]))


@pytest.mark.parametrize(
    "packets,expected,determined",
    [
        ([(C, SV, 50000, 22, SYN)], C, True),  # lone SYN
        ([(SV, C, 22, 50000, SYN | ACK), (C, SV, 50000, 22, ACK)], C, True),  # SYN-ACK first
        ([(C, SV, 50000, 22, SYN), (SV, C, 22, 50000, SYN | ACK)], C, True),  # full handshake
        ([(SV, C, 22, 50000, ACK)], C, False),  # mid-stream: port 22 is the server
        ([(SV, C, 2222, 40000, ACK)], C, False),  # both high: lower port is the server
        ([(C, SV, 7000, 7000, ACK)], C, False),  # equal ports: first packet
    ],
)
def test_tcp_rules(packets, expected, determined):
    m = SimFlowMap()
    for i, (s, d, sp, dp, flags) in enumerate(packets):
        m.packet(1000 + i, s, d, sp, dp, flags=flags)
    keys, src_is_b, det = resolve(m)
    assert initiator(keys, src_is_b) == expected and bool(det[0]) is determined


def test_icmp_reply_seen_alone_names_the_requester():
    m = SimFlowMap()
    m.packet(1, SV, C, 9, proto=1, icmp=(0, 0))
    keys, src_is_b, det = resolve(m)
    assert initiator(keys, src_is_b) == C and det[0]


def test_listener_beats_port_heuristics_and_wildcard_matches():
    m = SimFlowMap()
    m.packet(1, SV, C, 40000, 33000, proto=17)  # SV speaks first from a high port
    listen = NodeSockets(frozenset({(WILDCARD, 40000, 17)}))
    keys, src_is_b, det = resolve(m, listen)
    assert initiator(keys, src_is_b) == C and det[0]
    keys, src_is_b, det = resolve(m)  # without the listener: the lower port is the server
    assert initiator(keys, src_is_b) == SV and not det[0]


def test_span_kind_and_locality():
    assert span_kind(True, True) == SpanKind.CLIENT
    assert span_kind(False, True) == SpanKind.SERVER
    assert span_kind(False, False) == SpanKind.INTERNAL
    local = socket.inet_pton(socket.AF_INET, C) + bytes(12)
    m = SimFlowMap()
    m.packet(1, C, SV, 1, 2, proto=17)
    keys, _ = m.read_all()
    a_local, b_local = DirectionResolver(lambda: NodeSockets(local_addrs=frozenset({local}))
                                         ).locality(keys)  # fmt: skip
    assert list(a_local) == [False] and list(b_local) == [True]


def test_span_config_defaults_and_durations():
    cfg = SpanConfig()
    assert (cfg.max_record_interval, cfg.tcp_timeout, cfg.udp_timeout) == (60.0, 20.0, 60.0)
    assert (cfg.tcp_fin_timeout, cfg.tcp_rst_timeout, cfg.icmp_timeout) == (5.0, 5.0, 10.0)
    assert cfg.generic_timeout == 30.0 and cfg.community_id_seed == 0
    cfg = SpanConfig(max_record_interval="1m30s", poll_interval="500ms")
    assert cfg.max_record_interval == 90.0 and cfg.poll_interval == 0.5
    with pytest.raises(ValueError):
        SpanConfig(community_id_seed=70000)
    with pytest.raises(ValueError):
        SpanConfig(bogus_key=1)
    assert np.isclose(SpanConfig.model_validate({"tcp_timeout": "2s"}).tcp_timeout, 2.0)


def test_span_config_rejects_inverted_water_marks():
    with pytest.raises(ValueError, match="map_low_water"):
        SpanConfig(map_high_water=0.5, map_low_water=0.6)


def test_a_flow_with_no_local_end_triggers_one_rescan_per_gap():
    """A pod that started after the last periodic scan: the first batch naming it rescans
    once, so its flow gets the right locality; further misses wait for the gap."""
    local = socket.inet_pton(socket.AF_INET, C) + bytes(12)
    snapshots = [NodeSockets(), NodeSockets(local_addrs=frozenset({local}))]
    now = [100.0]

    def rescan() -> None:
        if len(snapshots) > 1:
            snapshots.pop(0)

    resolver = DirectionResolver(lambda: snapshots[0], refresh=rescan, min_refresh_gap=2.0,
                                 clock=lambda: now[0])
    m = SimFlowMap()
    m.packet(1, C, SV, 40000, 53, proto=17)
    keys, values = m.read_all()
    resolver.resolve(keys, values)
    a_local, b_local = resolver.locality(keys)
    assert (bool(a_local[0]) or bool(b_local[0])) and resolver.forced_refreshes == 1
    # a remote-only flow within the gap: no rescan; after the gap: one more
    other = SimFlowMap()
    other.packet(1, "192.0.2.1", "192.0.2.2", 1000, 2000, proto=17)
    okeys, ovalues = other.read_all()
    now[0] += 1.0
    resolver.resolve(okeys, ovalues)
    assert resolver.forced_refreshes == 1
    now[0] += 1.5
    resolver.resolve(okeys, ovalues)
    assert resolver.forced_refreshes == 2
    # flows with a local end never rescan
    now[0] += 10
    resolver.resolve(keys, values)
    assert resolver.forced_refreshes == 2
