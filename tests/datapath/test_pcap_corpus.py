"""Every Ethernet capture of the tcpdump test corpus through the kernel program.

About 470 real-world and deliberately hostile captures (truncated, malformed, fuzzed): each
packet runs through `mermin_ingress` with its capture time (replay clock). Per file, every
packet the kernel ran must be accounted for exactly once (SEEN = COUNTED + DUPLICATE +
UNPARSED_* + MAP_FULL + FRAG_UNMATCHED) and the flows must hold exactly COUNTED packets.

BPF_PROG_TEST_RUN refuses some frames before the program runs (shorter than an Ethernet
header, typed IPv4/IPv6 but shorter than that IP header, or larger than one page); those are
checked to be exactly such frames and reported.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from tests.datapath.packets import TC_ACT_UNSPEC, Harness

from mermin.datapath import libbpf
from mermin.datapath.loader import Datapath, DatapathSettings
from mermin.errors import DatapathError

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "pcaps" / "tcpdump"
LINKTYPE_ETHERNET = 1
OUTCOMES = ("counted", "duplicate", "unparsed_truncated", "unparsed_ethertype",
            "unparsed_protocol", "unparsed_too_deep", "map_full", "frag_unmatched")  # fmt: skip


def read_ethernet(path: Path) -> list[tuple[float, bytes]] | None:
    """The packets of an Ethernet pcap/pcapng file; None for other link types.

    A damaged file yields the packets before the damage (some corpus files end mid-record)."""
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        try:
            reader = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        except (ValueError, dpkt.dpkt.UnpackError):
            return None
        # the high bits of a pcap link type carry FCS information (LT_LINKTYPE masks them)
        if reader.datalink() & 0x03FFFFFF != LINKTYPE_ETHERNET:
            return None
        packets: list[tuple[float, bytes]] = []
        try:
            for ts, buf in reader:
                packets.append((float(ts), bytes(buf)))
        except (ValueError, dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError, EOFError):
            pass
        return packets


def captures() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.fixture(scope="module")
def dp(require_root: None, bpf_object: Path) -> Iterator[Datapath]:
    settings = DatapathSettings(pin=False, replay=True, flows_capacity=65536)
    with Datapath.load(bpf_object, settings) as d:
        yield d


def largest_runnable(fd: int) -> int:
    """The largest frame BPF_PROG_TEST_RUN accepts here (one page minus skb overhead)."""
    lo, hi = 64, 65536
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            libbpf.prog_test_run(fd, bytes(12) + b"\x08\x06" + bytes(mid - 14))
            lo = mid
        except DatapathError:
            hi = mid - 1
    return lo


def is_ip(frame: bytes) -> bool:
    """Independent of the kernel code: is the ethertype after up to 3 VLAN tags IPv4/IPv6
    (for VXLAN over IPv4: the inner frame's)?"""
    off, tags = 12, 0
    ethertype = int.from_bytes(frame[off : off + 2], "big")
    while ethertype in (0x8100, 0x88A8, 0x9100) and tags < 3 and len(frame) >= off + 6:
        off, tags = off + 4, tags + 1
        ethertype = int.from_bytes(frame[off : off + 2], "big")
    ip = off + 2
    if ethertype == 0x0800 and len(frame) > ip + 20 and frame[ip + 9] == 17:
        udp = ip + (frame[ip] & 0x0F) * 4
        if frame[udp + 2 : udp + 4] == (4789).to_bytes(2, "big") and len(frame) >= udp + 30:
            return is_ip(frame[udp + 16 :])
    return ethertype in (0x0800, 0x86DD)


def refused_for_a_known_reason(frame: bytes, limit: int) -> bool:
    ethertype = int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
    return (
        len(frame) < 14
        or len(frame) > limit
        or (ethertype == 0x0800 and len(frame) < 14 + 20)
        or (ethertype == 0x86DD and len(frame) < 14 + 40)
    )


@pytest.mark.timeout(120)
def test_corpus(dp: Datapath) -> None:
    files = captures()
    if not files:
        pytest.fail(f"the tcpdump capture corpus is missing at {CORPUS}")
    h = Harness(dp)
    fd = dp.program_fd("mermin_ingress")
    limit = largest_runnable(fd)
    totals: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    ran_files = 0
    for path in files:
        packets = read_ethernet(path)
        if packets is None:
            continue
        ran_files += 1
        h.reset()
        refused = 0
        for ts, frame in packets:
            ctx = libbpf.skb_ctx(tstamp=int(ts * 1e9))
            try:
                retval, _ = libbpf.prog_test_run(fd, frame, ctx)
            except DatapathError as exc:
                einval = f"[errno {errno.EINVAL}]" in str(exc)
                if einval and refused_for_a_known_reason(frame, limit):
                    refused += 1
                    continue
                raise AssertionError(f"{path.name}: {len(frame)}-byte frame: {exc}") from exc
            if retval != TC_ACT_UNSPEC:
                problems.append(f"{path.name}: returned {retval}")
            totals["ran_ip" if is_ip(frame) else "ran_non_ip"] += 1
        d = h.delta()
        flows = h.flows()
        in_flows = sum(int(v["dir"][0]["packets"]) + int(v["dir"][1]["packets"])
                       for v in flows.values())  # fmt: skip
        accounted = sum(d.get(k, 0) for k in OUTCOMES)
        ran = len(packets) - refused
        if not (d.get("seen", 0) == ran == accounted and in_flows == d.get("counted", 0)):
            problems.append(f"{path.name}: ran {ran}, counters {d}, packets in flows {in_flows}")
        totals.update(d)
        totals["refused"] += refused
    assert ran_files >= 400, f"only {ran_files} Ethernet captures found in {CORPUS}"
    assert not problems, "\n".join(problems[:20])
    # the bulk of the corpus is real traffic: most packets must become flows, and no IP frame
    # may be dismissed as "not IP"
    assert totals["counted"] > totals["seen"] // 2, dict(totals)
    assert totals["unparsed_ethertype"] == totals["ran_non_ip"], dict(totals)
    print(f"\n{ran_files} Ethernet captures: {dict(totals)} (largest runnable frame {limit})")
