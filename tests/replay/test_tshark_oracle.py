"""tshark as the oracle on real captures (../shared/pcaps/tcpdump): per TCP/UDP conversation,
packets in each direction equal tshark's `-z conv,tcp -z conv,udp` and IP-layer bytes equal
the sum of tshark's ip.len / (40 + ipv6.plen). The list is documented in docs/flows.md."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.replay.oracle import our_conversations, tshark_conversations, tshark_ip_bytes

from mermin.replay import ReplaySettings, open_capture, replay_capture

PCAPS = Path(__file__).resolve().parents[3] / "shared" / "pcaps" / "tcpdump"

ORACLE_FILES = [
    # Ethernet
    "bgp-4byte-asn.pcap", "mptcp-v0.pcap", "tfo-5c1fa7f9ae91.pcap", "of10_s4810.pcap",
    "eapon1.pcap", "dnssec.pcap", "ntp.pcap", "isakmp4500.pcap", "bfd-multihop.pcap",
    "HSRP_failover.pcap", "dhcp-rfc4388.pcap", "dhcpv6-ia-na.pcap", "kday7.pcap",
    "ldp-common-session.pcap",  # 802.1Q tagged
    "vxlan_port_8472.pcap",  # VXLAN on a non-configured port stays one UDP flow
    # Linux cooked (SLL), pcap and pcapng, ns timestamps
    "resp_3_malicious.pcap", "resp_1_benchmark.pcap", "mptcp-v1.pcap",
    "tcp-handshake-nano.pcap", "bgp-role.pcapng",
    # raw IP (101, 228, 229)
    "LINKTYPE_IPV4.pcap", "LINKTYPE_IPV6.pcap", "LINKTYPE_RAW_ipv6.pcap", "bgp-addpath.pcap",
    "gquic.pcap",
]  # fmt: skip

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root", "bpf_object")]


@pytest.fixture(scope="module")
def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is missing: scripts/setup.sh installs it (Debian package tshark)")
    if not PCAPS.is_dir():
        pytest.fail(f"{PCAPS} is missing (CI has ../shared beside the checkout)")
    return path


@pytest.mark.parametrize("name", ORACLE_FILES)
def test_conversations_match_tshark(tshark, name):
    path = PCAPS / name
    reports = []
    with open_capture(path) as cap:
        replay_capture(cap, ReplaySettings(), reports.extend)
    ours = our_conversations(reports)
    packets = tshark_conversations(path)
    ip_bytes = tshark_ip_bytes(path)
    assert packets, f"{name}: tshark found no TCP/UDP conversation; not an oracle file"
    theirs = {key: pk + ip_bytes.get(key, [0, 0]) for key, pk in packets.items()}
    assert ours == theirs
