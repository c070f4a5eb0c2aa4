"""InterfaceManager with the real Attacher and the real kernel program (build/mermin.bpf.o):
TCX and TC attach on live veths, in the root namespace and in a test namespace, interface
churn with hundreds of veth pairs, and no leftovers in the kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.bpfbuild import private_bpffs
from tests.helpers.netns import ping
from tests.interfaces.support import Links, fd_count, ifindex, ip, ip_batch, unique, wait_until

from mermin.config.discovery import InstrumentConfig
from mermin.datapath import libbpf
from mermin.datapath.attach import Attacher
from mermin.datapath.loader import Datapath, DatapathSettings
from mermin.interfaces.manager import InterfaceManager

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]

TCX_INGRESS, TCX_EGRESS = libbpf.BPF_TCX_INGRESS, libbpf.BPF_TCX_EGRESS
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def datapath(bpf_object: Path) -> Iterator[Datapath]:
    with Datapath.load(bpf_object, DatapathSettings(pin=False, flows_capacity=4096)) as dp:
        yield dp


def prog_ids(dp: Datapath) -> set[int]:
    return {libbpf.prog_info(dp.program_fd(n)).id for n in ("mermin_ingress", "mermin_egress")}


def kernel_tcx_links(ids: set[int]) -> list[tuple[int, int]]:
    """(ifindex, attach_type) of every link in the kernel that runs one of our programs.
    A link whose device is gone but whose fd is still open shows ifindex 0."""
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    found = []
    for entry in json.loads(out or "[]"):
        if entry.get("prog_id") not in ids:
            continue
        try:
            fd = libbpf.link_get_fd_by_id(entry["id"])
        except Exception:  # the link went away between the listing and now
            continue
        try:
            info = libbpf.link_info(fd)
        finally:
            libbpf.close_fd(fd)
        found.append((info.ifindex, info.attach_type))
    return found


def tc_filters(dev: str, netns: str | None = None) -> str:
    return "".join(ip_tc(["filter", "show", "dev", dev, d], netns) for d in ("ingress", "egress"))


def ip_tc(args: list[str], netns: str | None = None) -> str:
    cmd = ["tc", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def cfg(tag: str, **kw: object) -> InstrumentConfig:
    return InstrumentConfig(interfaces=[f"/^{tag}[0-9a-z]*$/"], netns="current", **kw)


@pytest.fixture
def tag() -> str:
    return unique("k")[:8]


def test_tcx_attach_counts_traffic_and_detaches(
    datapath: Datapath, links: Links, netns: str, tag: str
) -> None:
    ids = prog_ids(datapath)
    attacher = Attacher(datapath, mode="tcx")
    mgr = InterfaceManager(cfg(tag), attacher)
    before = fd_count()
    mgr.start()
    try:
        host = f"{tag}h"
        pod = unique("q")
        t0 = time.monotonic()
        ip("link", "add", host, "type", "veth", "peer", "name", pod, "netns", netns)
        links.made.append(host)
        assert wait_until(lambda: ifindex(host) in attacher.attached, 1.0)
        assert time.monotonic() - t0 < 1.0
        idx = ifindex(host)
        assert sorted(kernel_tcx_links(ids)) == [(idx, TCX_INGRESS), (idx, TCX_EGRESS)]
        # the attached programs really count: ping the "pod" over the veth
        ip("addr", "add", "10.213.7.1/30", "dev", host)
        ip("link", "set", host, "up")
        ip("addr", "add", "10.213.7.2/30", "dev", pod, netns=netns)
        ip("link", "set", pod, "up", netns=netns)
        assert ping(None, "10.213.7.2", count=2) == 2
        keys, _values = datapath.flows.read_all()
        assert len(keys) >= 1
        links.delete(host)
        assert wait_until(lambda: idx not in attacher.attached, 1.0)
        assert kernel_tcx_links(ids) == []  # fds closed: nothing of ours left in the kernel
        assert mgr.stats.attached == 1 and mgr.stats.detached == 1
        assert mgr.stats.attach_errors == mgr.stats.detach_errors == 0
    finally:
        mgr.stop()
    assert fd_count() == before
    assert kernel_tcx_links(ids) == []


def test_moved_to_other_namespace_is_detached(
    datapath: Datapath, links: Links, netns: str, tag: str
) -> None:
    ids = prog_ids(datapath)
    attacher = Attacher(datapath, mode="tcx")
    mgr = InterfaceManager(cfg(tag), attacher)
    mgr.start()
    try:
        name = links.veth(f"{tag}m")
        idx = ifindex(name)
        assert wait_until(lambda: idx in attacher.attached, 1.0)
        ip("link", "set", name, "netns", netns)  # what a CNI does with the pod end
        assert wait_until(lambda: idx not in attacher.attached, 1.0)
        assert kernel_tcx_links(ids) == []  # our program does not follow it into the pod
    finally:
        mgr.stop()
        subprocess.run(["ip", "-n", netns, "link", "del", name], capture_output=True)


def test_tc_mode_attach_rename_out_and_stop(datapath: Datapath, links: Links, tag: str) -> None:
    attacher = Attacher(datapath, mode="tc", tc_priority=7)
    mgr = InterfaceManager(cfg(tag, attach_mode="tc", tc_priority=7), attacher)
    mgr.start()
    try:
        a = links.veth(f"{tag}a")
        b = links.veth(f"{tag}b")
        assert wait_until(lambda: len(attacher.attached) == 2, 1.0)
        shown = tc_filters(a)
        assert "mermin_ingress" in shown and "mermin_egress" in shown and "pref 7" in shown
        out = unique("x")
        ip("link", "set", a, "name", out)
        links.made.append(out)
        assert wait_until(lambda: len(attacher.attached) == 1, 1.0)
        assert "mermin" not in tc_filters(out)
        assert "clsact" not in ip_tc(["qdisc", "show", "dev", out])  # we created it: removed
        assert "mermin_ingress" in tc_filters(b)
    finally:
        mgr.stop()
    assert "mermin" not in tc_filters(b)
    assert "clsact" not in ip_tc(["qdisc", "show", "dev", b])


@pytest.mark.parametrize("mode", ["tcx", "tc"])
def test_attach_inside_test_namespace(datapath: Datapath, netns: str, tag: str, mode: str) -> None:
    """The manager works in /var/run/netns/NAME: ifindexes are resolved there (TCX) and TC
    requests go to that namespace's netlink."""
    ids = prog_ids(datapath)
    inside = Links(netns)
    try:
        pre = inside.veth(f"{tag}p")
        attacher = Attacher(datapath, mode=mode)
        mgr = InterfaceManager(cfg(tag, attach_mode=mode), attacher,
                               netns_path=f"/var/run/netns/{netns}")  # fmt: skip
        mgr.start()
        try:
            pre_idx = ifindex(pre, netns=netns)
            assert attacher.attached == {pre_idx: pre}
            added = inside.veth(f"{tag}q")
            add_idx = ifindex(added, netns=netns)
            assert wait_until(lambda: add_idx in attacher.attached, 1.0)
            if mode == "tcx":
                assert sorted(i for i, _t in kernel_tcx_links(ids)) == sorted(
                    [pre_idx, pre_idx, add_idx, add_idx]
                )
            else:
                assert "mermin_ingress" in tc_filters(added, netns)
            inside.delete(added)
            assert wait_until(lambda: add_idx not in attacher.attached, 1.0)
        finally:
            mgr.stop()
        if mode == "tc":
            assert "mermin" not in tc_filters(pre, netns)
        assert kernel_tcx_links(ids) == []
    finally:
        inside.cleanup()


def test_churn_500_veth_pairs(datapath: Datapath, links: Links, netns: str, tag: str) -> None:
    """500 veth pairs created and deleted in bursts while the manager runs with real TCX
    attach and traffic flows over a watched "pod" veth: each one attached and detached, the
    busy one never disturbed, nothing left in the kernel, no fd leak."""
    count = 500
    ids = prog_ids(datapath)
    names = [f"{tag}{i:03d}" for i in range(count)]
    attacher = Attacher(datapath, mode="tcx")
    mgr = InterfaceManager(cfg(tag), attacher)
    before = fd_count()
    mgr.start()
    busy = f"{tag}zz"
    ip("link", "add", busy, "type", "veth", "peer", "name", "eth0", "netns", netns)
    links.made.append(busy)
    ip("addr", "add", "10.213.9.1/30", "dev", busy)
    ip("link", "set", busy, "up")
    ip("addr", "add", "10.213.9.2/30", "dev", "eth0", netns=netns)
    ip("link", "set", "eth0", "up", netns=netns)
    assert wait_until(lambda: ifindex(busy) in attacher.attached, 1.0)
    replies: list[int] = []
    pinger = threading.Thread(target=lambda: replies.append(ping(None, "10.213.9.2", count=40,
                                                                 interval=0.25)))  # fmt: skip
    pinger.start()
    try:
        t0 = time.monotonic()
        for start in range(0, count, 100):  # bursts of 100 pairs, peers never match
            batch = names[start : start + 100]
            ip_batch([f"link add {n} type veth peer name {n}-p" for n in batch])
        links.made.extend(names)
        assert wait_until(lambda: len(attacher.attached) == count + 1, 60.0), mgr.stats
        attach_s = time.monotonic() - t0
        assert sorted(attacher.attached.values()) == [*names, busy]
        kernel = kernel_tcx_links(ids)
        assert len(kernel) == 2 * (count + 1)
        assert {i for i, _t in kernel} == set(attacher.attached)
        t1 = time.monotonic()
        for start in range(0, count, 100):
            ip_batch([f"link del {n}" for n in names[start : start + 100]])
        assert wait_until(lambda: len(attacher.attached) == 1, 60.0), mgr.stats
        detach_s = time.monotonic() - t1
        pinger.join()
        assert replies == [40]  # the traffic never stopped
        keys, _values = datapath.flows.read_all()
        assert len(keys) >= 1  # and it was counted on the busy interface
        assert sorted(kernel_tcx_links(ids)) == [(ifindex(busy), TCX_INGRESS),
                                                 (ifindex(busy), TCX_EGRESS)]  # fmt: skip
        stats = mgr.stats
        assert stats.attached == count + 1 and stats.detached == count, stats
        assert stats.attach_errors == 0 and stats.detach_errors == 0
        assert stats.active == 1
        print(f"churn: {count} pairs attached in {attach_s:.2f}s, detached in {detach_s:.2f}s,"
              f" overruns={mgr.watcher.stats.overruns if mgr.watcher else '?'}")  # fmt: skip
    finally:
        pinger.join()
        mgr.stop()
    assert kernel_tcx_links(ids) == []
    assert fd_count() == before


AGENT_SCRIPT = """
import sys, time
from pathlib import Path
from mermin.config.discovery import InstrumentConfig
from mermin.datapath.attach import Attacher
from mermin.datapath.loader import Datapath, DatapathSettings
from mermin.interfaces.manager import InterfaceManager
obj, root, pattern = sys.argv[1:4]
dp = Datapath.load(obj, DatapathSettings(pin=True, pin_root=Path(root), flows_capacity=4096))
mgr = InterfaceManager(InstrumentConfig(interfaces=[pattern], netns="current"), Attacher(dp))
mgr.start()
print(len(mgr.attached), flush=True)
time.sleep(60)
"""


def test_restart_adopts_pinned_links_then_removes_orphans(
    bpf_object: Path, links: Links, tag: str
) -> None:
    """A crashed agent leaves pinned TCX links. The next one adopts those of interfaces it
    still wants (counting never stops) and only then removes the others."""
    keep = links.veth(f"{tag}a")
    drop = links.veth(f"{tag}b")
    pattern = f"/^{tag}[a-z]$/"
    with private_bpffs("mi") as bpffs:
        root = bpffs / "mermin"
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT_SCRIPT, str(bpf_object), str(root), pattern],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
        )  # fmt: skip
        try:
            assert agent.stdout is not None
            assert agent.stdout.readline().strip() == "2"
        finally:
            agent.kill()  # a crash: no detach
            agent.wait()
        pins = sorted(p.name for p in (root / "links").iterdir())
        assert pins == sorted(f"{n}_{d}" for n in (keep, drop) for d in ("ingress", "egress"))
        out = unique("x")
        ip("link", "set", drop, "name", out)  # no longer wanted by the next agent
        links.made.append(out)
        settings = DatapathSettings(pin=True, pin_root=root, flows_capacity=4096)
        with Datapath.load(bpf_object, settings) as dp:
            attacher = Attacher(dp, mode="tcx")
            mgr = InterfaceManager(InstrumentConfig(interfaces=[pattern], netns="current"),
                                   attacher)  # fmt: skip
            mgr.start()
            try:
                assert attacher.attached == {ifindex(keep): keep}
                assert attacher.stats.adopted == 2  # both directions taken over
                assert attacher.stats.orphans_removed == 2  # the renamed one's links
                kernel = kernel_tcx_links(prog_ids(dp))
                assert sorted(i for i, _t in kernel) == [ifindex(keep)] * 2
                assert sorted(p.name for p in (root / "links").iterdir()) == [
                    f"{keep}_egress",
                    f"{keep}_ingress",
                ]
            finally:
                mgr.stop()
            assert not list((root / "links").iterdir())
            assert kernel_tcx_links(prog_ids(dp)) == []
            dp.unpin()
