"""`mermin replay` over crafted captures with known ground truth (real kernel program)."""

from __future__ import annotations

import json
import struct

import communityid
import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw
from tests.replay.captures import (
    CLIENT,
    CLIENT6,
    SERVER,
    SERVER6,
    T0,
    at,
    gre,
    tcp_conversation,
    vxlan,
    write,
)

from mermin import cli
from mermin.config.span import SpanConfig
from mermin.flows.record import EndReason, SpanKind
from mermin.replay import ReplaySettings, open_capture, replay_capture

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root", "bpf_object")]
NS = 1_000_000_000


def replay(path, **span):
    reports = []
    with open_capture(path) as cap:
        result = replay_capture(cap, ReplaySettings(span=SpanConfig(**span)), reports.extend)
    return reports, result


def by_port(reports, port):
    return [r for r in reports if port in (r.src_port, r.dst_port)]


def test_fin_and_rst_endings_with_exact_counts(tmp_path):
    fin = tcp_conversation(0.0, sport=40001, data=3, close="fin")
    rst = tcp_conversation(1.0, sport=40002, data=1, close="rst")
    tail = [at(IP(src="10.9.9.9", dst="10.9.9.8") / UDP(sport=1, dport=2), 30.0)]  # moves time
    path = write(tmp_path / "endings.pcap", fin + rst + tail)
    reports, result = replay(path, tcp_fin_timeout="5s", tcp_rst_timeout="2s")
    (f,) = by_port(reports, 40001)
    assert f.end_reason == EndReason.END_OF_FLOW
    assert (f.src_addr, f.src_port, f.dst_port, f.direction) == (CLIENT, 40001, 80, "forward")
    c2s = [p for p in fin if p[IP].src == CLIENT]
    s2c = [p for p in fin if p[IP].src == SERVER]
    assert (f.packets_total, f.bytes_total) == (len(c2s), sum(len(p) for p in c2s))
    assert (f.rev_packets_total, f.rev_bytes_total) == (len(s2c), sum(len(p) for p in s2c))
    assert f.packets_delta == f.packets_total
    assert f.start_ns == int(T0) * NS and f.end_ns == int(T0) * NS + 110_000_000
    assert f.handshake_latency_ns == 10_000_000  # SYN -> SYN-ACK, 10 ms apart
    assert f.tcp_state in ("time_wait", "closed", "last_ack")
    (r,) = by_port(reports, 40002)
    assert r.end_reason == EndReason.END_OF_FLOW and r.rev_tcp_flags & 0x04
    assert result.run.ok == len(fin + rst + tail) and result.kernel["counted"] == result.run.ok


def test_idle_gap_and_active_interval_split_a_flow_with_correct_deltas(tmp_path):
    # UDP every second for 150 s, a 200 s silence, then 5 more packets
    pkts = [at(IP(src=CLIENT, dst=SERVER) / UDP(sport=5353, dport=53) / Raw(b"x" * 50), t)
            for t in range(150)]  # fmt: skip
    pkts += [at(IP(src=CLIENT, dst=SERVER) / UDP(sport=5353, dport=53) / Raw(b"x" * 50), 350 + t)
             for t in range(5)]  # fmt: skip
    path = write(tmp_path / "gaps.pcap", pkts)
    reports, _ = replay(path, max_record_interval="60s", udp_timeout="30s", poll_interval="5s")
    first = [r for r in reports if r.start_ns == int(T0 * NS)]
    second = [r for r in reports if r.start_ns == int((T0 + 350) * NS)]
    assert [r.end_reason for r in first] == [EndReason.ACTIVE_TIMEOUT, EndReason.ACTIVE_TIMEOUT,
                                             EndReason.IDLE_TIMEOUT]  # fmt: skip
    assert sum(r.packets_delta for r in first) == 150 == first[-1].packets_total
    assert [r.packets_total for r in first][:2] == [60, 120]  # polled at 60 s and 120 s
    assert all(r.bytes_delta == r.packets_delta * 78 for r in first)  # 20 IP + 8 UDP + 50
    assert len({r.trace_id for r in first}) == 1 and len({r.span_id for r in first}) == 3
    assert [(r.end_reason, r.packets_total) for r in second] == [(EndReason.FORCED_END, 5)]
    assert second[0].trace_id != first[0].trace_id
    assert first[0].src_port == 5353 and first[0].direction == "unknown"  # port 53 = server


def test_icmp_echo_exchange_is_one_flow(tmp_path):
    pkts = []
    for seq in range(3):
        pkts.append(at(IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=77, seq=seq), seq))
        pkts.append(at(IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=77, seq=seq), seq + 0.001))
    reports, _ = replay(write(tmp_path / "ping.pcap", pkts))
    (r,) = reports
    assert (r.src_addr, r.packets_total, r.rev_packets_total) == (CLIENT, 3, 3)
    assert (r.icmp_type, r.rev_icmp_type, r.direction) == (8, 0, "forward")
    ref = communityid.CommunityID().calc(communityid.FlowTuple.make_icmp(CLIENT, SERVER, 8, 0))
    assert r.community_id == ref


def test_mid_stream_flow_without_syn(tmp_path):
    pkts = tcp_conversation(0.0, sport=51000, dport=443, data=2, close="none", handshake=False)
    pkts = pkts[1:] + pkts[:1]  # the server's data arrives first
    for i, p in enumerate(pkts):
        p.time = T0 + 0.01 * i
    (r,), _ = replay(write(tmp_path / "mid.pcap", pkts))
    assert (r.src_addr, r.src_port, r.dst_port) == (CLIENT, 51000, 443)
    assert r.direction == "unknown" and r.handshake_latency_ns is None
    assert (r.packets_total, r.rev_packets_total) == (2, 2)
    assert r.kind == SpanKind.INTERNAL


def test_ipv6_conversation(tmp_path):
    pkts = tcp_conversation(0.0, sport=42000, dport=8080, ip=IPv6, client=CLIENT6,
                            server=SERVER6)  # fmt: skip
    (r,), _ = replay(write(tmp_path / "v6.pcap", pkts))
    assert (r.ip_version, r.src_addr, r.dst_addr) == (6, CLIENT6, SERVER6)
    c2s = [p for p in pkts if p[IPv6].src == CLIENT6]
    assert r.bytes_total == sum(len(p) for p in c2s) and r.direction == "forward"
    assert r.attributes()["network.type"] == "ipv6"
    ref = communityid.CommunityID().calc(
        communityid.FlowTuple.make_tcp(CLIENT6, SERVER6, 42000, 8080))
    assert r.community_id == ref


@pytest.mark.parametrize("encap", ["vxlan", "gre"])
def test_tunnelled_inner_flow(tmp_path, encap):
    inner = tcp_conversation(0.0, sport=43000, dport=80, data=1)
    wrap = vxlan if encap == "vxlan" else gre
    reports, _ = replay(write(tmp_path / f"{encap}.pcap", [wrap(p) for p in inner]))
    (r,) = reports
    assert (r.src_addr, r.dst_addr, r.src_port, r.dst_port) == (CLIENT, SERVER, 43000, 80)
    assert r.tunnel_type == encap
    assert r.tunnel_id == (42 if encap == "vxlan" else 7)
    assert {r.tunnel_src_addr, r.tunnel_dst_addr} == {"192.168.0.1", "192.168.0.2"}
    c2s = [p for p in inner if p[IP].src == CLIENT]
    assert r.bytes_total == sum(len(p) for p in c2s)  # inner IP bytes, not the outer packet


@pytest.mark.parametrize("linktype,ng", [("sll", False), ("sll2", False), ("raw", False),
                                         ("ether", True)])  # fmt: skip
def test_link_types_and_pcapng_give_the_same_flow(tmp_path, linktype, ng):
    pkts = tcp_conversation(0.0, sport=44000, data=2)
    name = f"conv-{linktype}.{'pcapng' if ng else 'pcap'}"
    (r,), result = replay(write(tmp_path / name, pkts, linktype=linktype, ng=ng))
    c2s = [p for p in pkts if p[IP].src == CLIENT]
    assert (r.packets_total, r.bytes_total) == (len(c2s), sum(len(p) for p in c2s))
    assert r.rev_packets_total == len(pkts) - len(c2s)
    assert r.start_ns == int(T0 * NS)
    assert result.run.ok == len(pkts)


def _cli(capsys, *argv):
    code = cli.main(["replay", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_lines_and_summary(tmp_path, capsys):
    path = write(tmp_path / "c.pcap", tcp_conversation(0.0, sport=45000, data=1))
    code, out, err = _cli(capsys, path, "--format", "json")
    assert code == 0
    (line,) = out.splitlines()
    obj = json.loads(line)
    assert obj["name"] == "flow_ipv4_tcp" and obj["source.port"] == 45000
    # closed by FIN both ways before the capture ended: end_of_flow, not forced_end
    assert obj["flow.end_reason"] == "end_of_flow" and len(obj["trace_id"]) == 32
    assert obj["start_time_unix_nano"] == int(T0 * NS)
    assert "replay: 8 packets" in err and "counted 8" in err


def test_bad_files_fail_with_one_line(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a capture\n")
    short = tmp_path / "short.pcap"
    short.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
    wifi = tmp_path / "wifi.pcap"
    wifi.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 105))
    for path, words in ((text, "not a pcap or pcapng"), (short, "truncated pcap header"),
                        (wifi, "unsupported link type 105"),
                        (tmp_path / "missing.pcap", "no such file")):  # fmt: skip
        code, out, err = _cli(capsys, path)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and words in err


def test_damaged_packets_are_counted_not_fatal(tmp_path, capsys):
    pkts = tcp_conversation(0.0, sport=46000, data=1)
    path = write(tmp_path / "cut.pcap", pkts)
    data = path.read_bytes()
    # a short frame (5 bytes) in the middle, and a last record cut in half
    short = struct.pack("<IIII", int(T0) + 1, 0, 5, 5) + b"\x01" * 5
    cut = struct.pack("<IIII", int(T0) + 2, 0, 200, 200) + b"\x02" * 50
    path.write_bytes(data + short + cut)
    code, out, err = _cli(capsys, path, "--format", "json")
    assert code == 0 and len(out.splitlines()) == 1
    assert "1 damaged records" in err and "1 too short" in err
    sent = sum(1 for p in pkts if p[IP].src == CLIENT)
    assert json.loads(out)["flow.packets.total"] == sent


def test_config_applies_span_timeouts_and_filters(tmp_path, capsys):
    udp = [at(IP(src=CLIENT, dst=SERVER) / UDP(sport=5000, dport=53), t) for t in (0, 1, 20, 21)]
    tcp = tcp_conversation(0.5, sport=47000, data=1)
    path = write(tmp_path / "mix.pcap", sorted(udp + tcp, key=lambda p: p.time))
    config = tmp_path / "mermin.hcl"
    config.write_text(
        'span {\n  udp_timeout = "10s"\n  poll_interval = "1s"\n}\n'
        'filter "network" {\n  transport = { match = ["udp"] }\n}\n'
        'export "traces" {\n  stdout = { format = "text" }\n}\n'
    )
    code, out, err = _cli(capsys, path, "--format", "json", "-c", config)
    assert code == 0, err
    reports = [json.loads(line) for line in out.splitlines()]
    # the TCP flow is filtered out; the UDP flow is split by the 10 s udp_timeout
    assert [(r["network.transport"], r["flow.end_reason"], r["flow.packets.total"])
            for r in reports] == [("udp", "idle_timeout", 2), ("udp", "forced_end", 2)]  # fmt: skip
    assert len({r["trace_id"] for r in reports}) == 2


@pytest.mark.parametrize("linktype", ["ether", "sll2", "raw"])
def test_python_fallback_matches_the_c_helper(tmp_path, linktype):
    udp = at(IP(src=CLIENT, dst=SERVER) / UDP(sport=5001, dport=53) / Raw(b"z" * 20), 0.5)
    pkts = [*tcp_conversation(0.0, sport=48000, data=2), udp]
    path = write(tmp_path / "both.pcap", sorted(pkts, key=lambda p: p.time), linktype=linktype)

    def summary(use_c):
        out = []
        with open_capture(path, use_c=use_c) as cap:
            res = replay_capture(cap, ReplaySettings(use_c=use_c), out.extend)
        return res.run, sorted((r.src_port, r.packets_total, r.bytes_total, r.rev_bytes_total,
                                r.start_ns, r.end_ns) for r in out)  # fmt: skip

    c_run, c_flows = summary(True)
    py_run, py_flows = summary(False)
    assert c_flows == py_flows and len(c_flows) == 2
    assert c_run == py_run and c_run.ok == len(pkts)
