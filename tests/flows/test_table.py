"""Flow table lifecycle against a simulated kernel map (no kernel needed)."""

from __future__ import annotations

import socket

import communityid
import numpy as np
import pytest
from tests.flows.sim import ACK, FIN, PSH, RST, SYN, SimFlowMap

from mermin.config.span import SpanConfig
from mermin.flows.clock import ManualClock
from mermin.flows.direction import DirectionResolver
from mermin.flows.listening import NodeSockets
from mermin.flows.record import EndReason, SpanKind
from mermin.flows.table import FlowTable

S = 1_000_000_000
CLIENT, SERVER = "10.1.0.5", "10.2.0.9"


def _table(fmap: SimFlowMap, **kw) -> FlowTable:
    cfg = SpanConfig(**kw)
    return FlowTable(fmap, cfg, ManualClock(), counters=fmap.counters)


def _handshake(m: SimFlowMap, t: int, sport: int = 40000, dport: int = 443) -> None:
    m.packet(t, CLIENT, SERVER, sport, dport, flags=SYN)
    m.packet(t + 1000, SERVER, CLIENT, dport, sport, flags=SYN | ACK)
    m.packet(t + 2000, CLIENT, SERVER, sport, dport, flags=ACK)


def test_active_reports_carry_deltas_and_totals_then_idle_end():
    m = SimFlowMap()
    table = _table(m, max_record_interval="60s", tcp_timeout="100s")
    _handshake(m, 1 * S)
    for i in range(10):
        m.packet(2 * S + i, CLIENT, SERVER, 40000, 443, size=100, flags=PSH | ACK)
    assert table.poll(30 * S) == []  # not due yet
    m.packet(50 * S, SERVER, CLIENT, 443, 40000, size=1000, flags=ACK)
    (r1,) = table.poll(61 * S)
    assert r1.end_reason == EndReason.ACTIVE_TIMEOUT
    assert (r1.src_addr, r1.src_port, r1.dst_addr, r1.dst_port) == (CLIENT, 40000, SERVER, 443)
    assert r1.direction == "forward"
    assert (r1.packets_delta, r1.packets_total, r1.bytes_total) == (12, 12, 60 + 60 + 1000)
    assert (r1.rev_packets_delta, r1.rev_bytes_total) == (2, 1060)
    assert r1.handshake_latency_ns == 1000
    assert r1.tcp_flags == SYN | ACK | PSH and r1.rev_tcp_flags == SYN | ACK
    assert r1.start_ns == 1 * S and r1.end_ns == 50 * S
    # a quiet flow past the interval gives no report (nothing changed) and stays open
    assert table.poll(70 * S) == []
    for i in range(3):
        m.packet(71 * S + i, CLIENT, SERVER, 40000, 443, size=200, flags=ACK)
    assert table.poll(120 * S) == []  # 59 s since r1
    (r2,) = table.poll(122 * S)
    assert r2.end_reason == EndReason.ACTIVE_TIMEOUT
    assert (r2.packets_delta, r2.packets_total, r2.bytes_delta) == (3, 15, 600)
    assert r2.rev_packets_delta == 0 and r2.rev_packets_total == 2
    assert r2.trace_id == r1.trace_id and r2.span_id != r1.span_id
    assert r2.community_id == r1.community_id
    # idle past tcp_timeout with nothing new since r2: the entry goes, no empty report
    assert table.poll(172 * S) == []
    assert len(m.entries) == 0 and len(table) == 0
    assert table.stats.flows_ended == 1


def test_fin_both_ways_switches_to_fin_timeout_and_reports_end_of_flow():
    m = SimFlowMap()
    table = _table(m, tcp_timeout="20s", tcp_fin_timeout="5s")
    _handshake(m, 1 * S)
    m.packet(2 * S, CLIENT, SERVER, 40000, 443, flags=FIN | ACK)
    assert table.poll(8 * S) == []  # FIN one way only: still tcp_timeout
    # FIN both ways, the last FIN not acknowledged yet (observer state last_ack = 9)
    m.packet(9 * S, SERVER, CLIENT, 443, 40000, flags=FIN | ACK, tcp_state=9)
    assert table.poll(13 * S) == []  # 4 s idle < 5 s
    (r,) = table.poll(14 * S + 10)
    assert r.end_reason == EndReason.END_OF_FLOW
    assert (r.packets_total, r.rev_packets_total) == (3, 2)
    assert not m.entries


def test_completed_close_is_reported_after_the_short_linger():
    m = SimFlowMap()
    table = _table(m, tcp_timeout="20s", tcp_fin_timeout="5s", tcp_close_linger="500ms")
    _handshake(m, 1 * S)
    m.packet(2 * S, CLIENT, SERVER, 40000, 443, flags=FIN | ACK, tcp_state=5)
    m.packet(2 * S + 100, SERVER, CLIENT, 443, 40000, flags=FIN | ACK, tcp_state=10)
    m.packet(2 * S + 200, CLIENT, SERVER, 40000, 443, flags=ACK, tcp_state=10)
    assert table.poll(2 * S + 400_000_000) == []  # within the linger: the last ACK may trail
    (r,) = table.poll(3 * S)
    assert r.end_reason == EndReason.END_OF_FLOW
    assert (r.packets_total, r.rev_packets_total) == (4, 2)
    assert not m.entries


def test_rst_uses_rst_timeout():
    m = SimFlowMap()
    table = _table(m, tcp_rst_timeout="2s")
    _handshake(m, 1 * S)
    m.packet(2 * S, SERVER, CLIENT, 443, 40000, flags=RST)
    (r,) = table.poll(4 * S)
    assert r.end_reason == EndReason.END_OF_FLOW and r.rev_packets_total == 2


def test_packets_between_read_and_delete_are_in_the_final_report():
    m = SimFlowMap()
    table = _table(m, udp_timeout="10s")
    for i in range(5):
        m.packet(1 * S + i, CLIENT, SERVER, 5000, 53, proto=17, size=80)
    # the flow is due for its idle end; two packets land after the read, before the delete
    m.before_take = lambda: [
        m.packet(1 * S + 10 + i, SERVER, CLIENT, 53, 5000, proto=17, size=120) for i in range(2)
    ]
    (r,) = table.poll(20 * S)
    assert r.end_reason == EndReason.IDLE_TIMEOUT
    assert (r.packets_total, r.rev_packets_total, r.rev_bytes_total) == (5, 2, 240)
    assert r.src_addr == CLIENT  # port 53 is the server


def test_icmp_echo_is_one_flow_with_reference_community_id():
    m = SimFlowMap()
    table = _table(m, community_id_seed=7)
    m.packet(1 * S, SERVER, CLIENT, 77, proto=1, size=84, icmp=(0, 0))  # reply seen first
    m.packet(1 * S - 10, CLIENT, SERVER, 77, proto=1, size=84, icmp=(8, 0))
    (r,) = table.flush()
    assert r.end_reason == EndReason.FORCED_END
    assert r.src_addr == CLIENT and r.direction == "forward"
    assert (r.icmp_type, r.rev_icmp_type, r.src_port) == (8, 0, None)
    tpl = communityid.FlowTuple.make_icmp(CLIENT, SERVER, 8, 0)
    ref = communityid.CommunityID(seed=7).calc(tpl)
    assert r.community_id == ref
    attrs = r.attributes()
    assert attrs["flow.icmp.type.name"] == "echo_request"
    assert attrs["flow.reverse.icmp.type.name"] == "echo_reply"


def test_mid_stream_flow_direction_is_guessed_from_ports():
    m = SimFlowMap()
    table = _table(m)
    m.packet(1 * S, SERVER, CLIENT, 443, 40000, size=1400, flags=ACK)  # server speaks first
    m.packet(1 * S + 5, CLIENT, SERVER, 40000, 443, flags=ACK)
    (r,) = table.flush()
    assert (r.src_addr, r.dst_port, r.direction) == (CLIENT, 443, "unknown")
    assert (r.packets_total, r.rev_bytes_total) == (1, 1400)
    assert r.handshake_latency_ns is None


def test_listening_socket_decides_and_kind_follows_locality():
    local = socket.inet_pton(socket.AF_INET, SERVER) + bytes(12)
    snap = NodeSockets(frozenset({(local, 8080, 17)}), frozenset({local}))
    m = SimFlowMap()
    table = FlowTable(m, SpanConfig(), ManualClock(), direction=DirectionResolver(lambda: snap))
    # port heuristics alone would call 8080 the client of 5353 (the lower port is the server)
    m.packet(1 * S, SERVER, CLIENT, 8080, 5353, proto=17)
    m.packet(2 * S, CLIENT, SERVER, 5353, 8080, proto=17)
    (r,) = table.flush()
    assert (r.src_addr, r.src_port, r.direction) == (CLIENT, 5353, "forward")
    assert r.kind == SpanKind.SERVER and r.dst_local and not r.src_local


def test_first_packet_rule_and_internal_kind_for_portless_protocols():
    m = SimFlowMap()
    table = _table(m)
    m.packet(1 * S, SERVER, CLIENT, proto=47, size=500)
    (r,) = table.flush()
    assert (r.src_addr, r.direction, r.kind) == (SERVER, "unknown", SpanKind.INTERNAL)
    assert r.src_port is None and r.transport == "gre"


def test_map_above_high_water_evicts_oldest_with_lack_of_resources():
    m = SimFlowMap(capacity=10)
    table = _table(m, map_high_water=0.8, map_low_water=0.5)
    for i in range(9):
        m.packet((i + 1) * S, CLIENT, SERVER, 30000 + i, 53, proto=17)
    reports = table.poll(10 * S)
    assert sorted(r.src_port for r in reports) == [30000, 30001, 30002, 30003]
    assert {r.end_reason for r in reports} == {EndReason.LACK_OF_RESOURCES}
    assert len(m.entries) == 5 and table.stats.evicted == 4


def test_map_full_counter_is_surfaced():
    m = SimFlowMap(capacity=1)
    table = _table(m)
    m.packet(1 * S, CLIENT, SERVER, 1, 2, proto=17)
    m.packet(1 * S, CLIENT, SERVER, 3, 4, proto=17)
    table.poll(1 * S)
    assert table.stats.map_full == 1


def test_vanished_entries_are_forgotten_and_wall_offset_applies():
    m = SimFlowMap()
    table = FlowTable(m, SpanConfig(), ManualClock(wall_offset_ns=1000 * S))
    m.packet(1 * S, CLIENT, SERVER, 1234, 80)
    table.poll(2 * S)
    m.entries.clear()
    table.poll(3 * S)
    assert table.stats.vanished == 1 and len(table) == 0
    m.packet(4 * S, CLIENT, SERVER, 1234, 80)
    (r,) = table.flush()
    assert r.start_ns == 1004 * S


def test_ipv6_flow_fields():
    m = SimFlowMap()
    table = _table(m)
    m.packet(1 * S, "2001:db8::1", "2001:db8::2", 50000, 80, flags=SYN, dscp=46, ttl=63)
    (r,) = table.flush()
    a = r.attributes()
    assert a["network.type"] == "ipv6" and a["source.address"] == "2001:db8::1"
    assert a["flow.ip.dscp.name"] == "ef" and a["flow.ip.ttl"] == 63
    assert "flow.reverse.ip.ttl" not in a  # the destination never answered
    assert a["flow.connection.state"] == "closed"


@pytest.mark.parametrize("flows", [1, 50])
def test_flush_reports_everything_once(flows):
    m = SimFlowMap()
    table = _table(m)
    for i in range(flows):
        m.packet(S, CLIENT, SERVER, 20000 + i, 80)
    assert len(table.flush()) == flows
    assert table.flush() == [] and not m.entries


def test_duplicate_keys_in_one_read_are_merged():
    m = SimFlowMap()
    m.packet(1 * S, CLIENT, SERVER, 1000, 53, proto=17)
    m.packet(2 * S, CLIENT, SERVER, 1000, 53, proto=17)
    table = _table(m)
    real = m.read_all

    def twice():
        keys, values = real()
        return np.concatenate([keys, keys]), np.concatenate([values, values])

    m.read_all = twice
    assert table.poll(3 * S) == [] and len(table) == 1
    (r,) = table.flush()
    assert r.packets_total == 2 and not m.entries


def test_live_table_scans_node_sockets_and_close_stops_it():
    m = SimFlowMap()
    table = FlowTable(m, SpanConfig())  # no clock: live, with the node socket watcher
    try:
        watcher = table._watcher
        assert watcher is not None and watcher.stats.scans >= 1
        assert watcher.current.namespaces >= 1
    finally:
        table.close()
    assert not watcher._thread.is_alive()


def test_flush_keeps_end_of_flow_for_connections_already_closed():
    m = SimFlowMap()
    table = _table(m)
    _handshake(m, 1 * S, sport=40001)
    m.packet(2 * S, CLIENT, SERVER, 40001, 443, flags=FIN | ACK)
    m.packet(2 * S + 1, SERVER, CLIENT, 443, 40001, flags=FIN | ACK)
    _handshake(m, 1 * S, sport=40002)  # still open
    reasons = {r.src_port: r.end_reason for r in table.flush()}
    assert reasons == {40001: EndReason.END_OF_FLOW, 40002: EndReason.FORCED_END}


def test_boot_clock_offset_maps_boottime_to_wall_time():
    import time

    from mermin.flows.clock import BootClock

    clock = BootClock()
    wall = clock.now_ns() + clock.wall_offset_ns()
    assert abs(wall - time.time_ns()) < 50_000_000  # same instant, within scheduling noise
