"""The flow table over the real kernel map, packets fed with BPF_PROG_TEST_RUN on a chosen clock.

Shows the atomic end of a flow: packets that hit the kernel entry after the table's read and
before its delete are in the final report, and the entry is gone afterwards.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from mermin.config.span import SpanConfig
from mermin.datapath import libbpf
from mermin.datapath.loader import Datapath, DatapathSettings
from mermin.flows.clock import ManualClock
from mermin.flows.record import EndReason
from mermin.flows.table import FlowTable

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root", "bpf_object")]
S = 1_000_000_000
A, B = "10.50.0.1", "10.50.0.2"


@pytest.fixture
def datapath(bpf_object):
    dp = Datapath.load(bpf_object, DatapathSettings(replay=True, pin=False, flows_capacity=1024))
    try:
        yield dp
    finally:
        dp.close()


def send(dp: Datapath, pkt, t_ns: int) -> None:
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)
    libbpf.prog_test_run(dp.program_fd("mermin_ingress"), frame,
                         ctx=libbpf.skb_ctx(tstamp=t_ns, ifindex=1))  # fmt: skip


class RacingMap:
    """The real FlowMap, but packets arrive between read_all() and take()."""

    def __init__(self, dp: Datapath, late: list) -> None:
        self.dp, self.inner, self.late = dp, dp.flows, late
        self.capacity = dp.flows.capacity

    def read_all(self):
        return self.inner.read_all()

    def take(self, keys):
        for pkt, t in self.late:
            send(self.dp, pkt, t)
        self.late = []
        return self.inner.take(keys)


def test_packets_between_read_and_delete_reach_the_final_report(datapath):
    req = IP(src=A, dst=B) / UDP(sport=40000, dport=53) / Raw(b"q" * 30)
    rep = IP(src=B, dst=A) / UDP(sport=53, dport=40000) / Raw(b"r" * 90)
    for i in range(4):
        send(datapath, req, (1 + i) * S)
    late = [(rep, 6 * S), (rep, 7 * S)]
    fmap = RacingMap(datapath, late)
    table = FlowTable(fmap, SpanConfig(udp_timeout="30s"), ManualClock())
    (r,) = table.poll(60 * S)  # read: 4 packets, idle 56 s -> ended; take() sees 6
    assert r.end_reason == EndReason.IDLE_TIMEOUT
    assert (r.src_addr, r.packets_total, r.bytes_total) == (A, 4, 4 * len(req))
    assert (r.rev_packets_total, r.rev_bytes_total) == (2, 2 * len(rep))
    assert r.end_ns == 7 * S
    keys, _ = datapath.flows.read_all()
    assert len(keys) == 0 and len(table) == 0


def test_active_reports_then_fin_over_the_kernel_map(datapath):
    c2s = IP(src=A, dst=B) / TCP(sport=41000, dport=80, flags="PA") / Raw(b"x" * 100)
    s2c = IP(src=B, dst=A) / TCP(sport=80, dport=41000, flags="PA") / Raw(b"y" * 500)
    send(datapath, IP(src=A, dst=B) / TCP(sport=41000, dport=80, flags="S"), 1 * S)
    send(datapath, IP(src=B, dst=A) / TCP(sport=80, dport=41000, flags="SA"), 1 * S + 500)
    for i in range(10):
        send(datapath, c2s, 2 * S + i)
    table = FlowTable(datapath.flows, SpanConfig(max_record_interval="10s", tcp_timeout="60s"),
                      ManualClock(), counters=datapath.counters)  # fmt: skip
    (r1,) = table.poll(12 * S)
    assert (r1.end_reason, r1.packets_delta, r1.rev_packets_delta) == (
        EndReason.ACTIVE_TIMEOUT, 11, 1)  # fmt: skip
    assert r1.handshake_latency_ns == 500 and r1.direction == "forward"
    send(datapath, s2c, 13 * S)
    send(datapath, IP(src=A, dst=B) / TCP(sport=41000, dport=80, flags="FA"), 14 * S)
    send(datapath, IP(src=B, dst=A) / TCP(sport=80, dport=41000, flags="FA"), 14 * S + 10)
    # FIN both ways, the second one acknowledging the first: the observer's state is time_wait,
    # so the flow ends once quiet for tcp_close_linger (0.5 s), not tcp_fin_timeout (5 s)
    assert table.poll(14 * S + 400_000_000) == []
    (r2,) = table.poll(15 * S)
    assert r2.end_reason == EndReason.END_OF_FLOW and r2.trace_id == r1.trace_id
    assert (r2.packets_delta, r2.rev_packets_delta) == (1, 2)
    assert (r2.packets_total, r2.rev_packets_total) == (12, 3)
    assert r2.rev_bytes_delta == len(s2c) + 40
    assert table.stats.map_full == 0
