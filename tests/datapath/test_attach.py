"""Attaching and detaching in both modes, rollback, vanished interfaces, orphan cleanup.

The programs are the stand-in object's `mermin_ingress` / `mermin_egress` (same names, maps
and config as the real program, trivial logic), so these tests pin down the attacher alone.
Each test works on veths it creates in the root namespace (where the agent attaches) and
pins into a private BPF filesystem; what is left is checked with bpftool and tc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.bpfbuild import STANDIN, compile_bpf, private_bpffs
from tests.helpers.netns import Topology, ping

from mermin.datapath import libbpf
from mermin.datapath.attach import Attacher, probe_tcx
from mermin.datapath.loader import Datapath, DatapathSettings
from mermin.errors import DatapathError

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]

MODES = ["tcx", "tc"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bpf(STANDIN, tmp_path_factory.mktemp("bpf"), "standin")


@pytest.fixture
def pins() -> Iterator[Path]:
    with private_bpffs() as mnt:
        yield mnt / "mermin_v1"


@pytest.fixture
def dp(standin: Path, pins: Path) -> Iterator[Datapath]:
    with Datapath.load(standin, DatapathSettings(pin_root=pins)) as datapath:
        yield datapath


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology(prefix="ml") as t:
        yield t
    assert not t.leftovers


# -- what is attached, seen from outside --------------------------------------------------------
def prog_ids(dp: Datapath) -> set[int]:
    return {libbpf.prog_info(dp.program_fd(n)).id for n in ("mermin_ingress", "mermin_egress")}


def tcx_links(prog_ids_: set[int]) -> list[dict]:
    """Links (from `bpftool link show`) of these programs that are still attached somewhere.

    A detached link object can outlive its detach while some fd still refers to it (the
    simulated crashes here keep their fds); it no longer hooks anything: ifindex 0.
    """
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True)
    links = [link for link in json.loads(out.stdout or "[]") if link["prog_id"] in prog_ids_]
    attached = []
    for link in links:
        try:
            fd = libbpf.link_get_fd_by_id(link["id"])
        except DatapathError:
            continue  # freed meanwhile
        try:
            if libbpf.link_info(fd).ifindex:
                attached.append(link)
        finally:
            os.close(fd)
    return attached


def tc_filters(dev: str, direction: str) -> str:
    argv = ["tc", "filter", "show", "dev", dev, direction]
    return subprocess.run(argv, capture_output=True, text=True).stdout


def has_clsact(dev: str) -> bool:
    out = subprocess.run(["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True)
    return "clsact" in out.stdout


def pinned_link(path: Path) -> libbpf.LinkInfo:
    fd = libbpf.obj_get(path)
    try:
        return libbpf.link_info(fd)
    finally:
        os.close(fd)


def assert_clean(dp: Datapath, dev: str) -> None:
    assert tcx_links(prog_ids(dp)) == []
    assert "mermin" not in tc_filters(dev, "ingress") + tc_filters(dev, "egress")


# -- tests ----------------------------------------------------------------------------------
def test_probe_finds_tcx_on_this_kernel(dp: Datapath) -> None:
    assert probe_tcx(dp.program_fd("mermin_ingress")) is True  # kernel 6.18
    assert Attacher(dp).method == "tcx"


@pytest.mark.parametrize("mode", MODES)
def test_attach_counts_traffic_and_detach_leaves_nothing(
    dp: Datapath, topo: Topology, mode: str
) -> None:
    ns = topo.netns()
    host, pod = topo.veth(peer_ns=ns)
    topo.addr(host, "10.231.0.1/30")
    topo.addr(pod, "10.231.0.2/30", ns=ns)
    idx = topo.ifindex(host)
    att = Attacher(dp, mode=mode)
    att.attach(idx, host)
    att.attach(idx, host)  # idempotent
    assert att.attached == {idx: host} and att.method == mode
    if mode == "tcx":
        assert len(tcx_links(prog_ids(dp))) == 2
        assert sorted(p.name for p in (dp.pin_root / "links").iterdir()) == [
            f"{host}_egress",
            f"{host}_ingress",
        ]
    else:
        assert "mermin_ingress" in tc_filters(host, "ingress")
        assert "mermin_egress" in tc_filters(host, "egress")
    before = dp.counters()["seen"]
    assert ping(ns, "10.231.0.1", count=3) == 3
    # 3 requests in + 3 replies out, plus maybe neighbour discovery: at least 6.
    assert dp.counters()["seen"] - before >= 6
    att.detach(idx)
    assert att.attached == {}
    assert_clean(dp, host)
    assert not has_clsact(host)  # we created it, we removed it
    if mode == "tcx":
        assert list((dp.pin_root / "links").iterdir()) == []
    att.detach(idx)  # unknown now: no-op


def test_tc_keeps_a_clsact_it_did_not_create(dp: Datapath, topo: Topology) -> None:
    host, _ = topo.veth()
    subprocess.run(["tc", "qdisc", "add", "dev", host, "clsact"], check=True)
    att = Attacher(dp, mode="tc", tc_priority=7)
    att.attach(topo.ifindex(host), host)
    assert "pref 7" in tc_filters(host, "ingress")
    att.detach_all()
    assert_clean(dp, host)
    assert has_clsact(host)


def test_tc_priority_taken_by_another_program_rolls_back(
    dp: Datapath, topo: Topology, standin: Path
) -> None:
    """Egress fails (priority in use by a foreign filter): ingress must not stay attached."""
    host, _ = topo.veth()
    idx = topo.ifindex(host)
    foreign = libbpf.BpfObject.open(standin)
    try:
        foreign.load()
        subprocess.run(["tc", "qdisc", "add", "dev", host, "clsact"], check=True)
        ipr_att = Attacher(dp, mode="tc")
        ipr_att.ipr.tc(
            "add-filter", "bpf", idx, ":1", fd=foreign.program_fd("mermin_egress"),
            name="other_prog", parent=0xFFFFFFF3, prio=1, classid=1, direct_action=True,
        )  # fmt: skip
        att = Attacher(dp, mode="tc")
        with pytest.raises(DatapathError, match=r"priority 1 .* used by another program"):
            att.attach(idx, host)
        assert att.attached == {}
        assert "mermin" not in tc_filters(host, "ingress")
        assert "other_prog" in tc_filters(host, "egress")  # never touch what is not ours
        ipr_att.detach_all()
    finally:
        foreign.close()


def test_tcx_failure_on_egress_rolls_back_ingress(dp: Datapath, topo: Topology) -> None:
    host, _ = topo.veth()
    (dp.pin_root / "links" / f"{host}_egress").mkdir(parents=True)  # pinning egress fails
    att = Attacher(dp, mode="tcx")
    with pytest.raises(DatapathError):
        att.attach(topo.ifindex(host), host)
    assert att.attached == {}
    assert_clean(dp, host)
    assert not (dp.pin_root / "links" / f"{host}_ingress").exists()


@pytest.mark.parametrize("mode", MODES)
def test_detach_after_the_interface_vanished(dp: Datapath, topo: Topology, mode: str) -> None:
    host, _ = topo.veth()
    idx = topo.ifindex(host)
    att = Attacher(dp, mode=mode)
    att.attach(idx, host)
    subprocess.run(["ip", "link", "del", host], check=True)
    att.detach(idx)  # no error
    assert att.attached == {}
    assert tcx_links(prog_ids(dp)) == []
    assert not (dp.pin_root / "links" / f"{host}_ingress").exists()


CRASHING_AGENT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from mermin.datapath.attach import Attacher
    from mermin.datapath.loader import Datapath, DatapathSettings
    obj, pins, mode, ifname, ifindex = sys.argv[1:6]
    dp = Datapath.load(obj, DatapathSettings(pin_root=Path(pins)))
    Attacher(dp, mode=mode).attach(int(ifindex), ifname)
    print("attached", flush=True)
    sys.stdin.read()  # wait to be killed
    """
)


@pytest.mark.parametrize("mode", MODES)
def test_orphans_of_a_crashed_agent_are_removed(
    standin: Path, pins: Path, topo: Topology, mode: str
) -> None:
    host, _ = topo.veth()
    idx = topo.ifindex(host)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    argv = [sys.executable, "-c", CRASHING_AGENT, str(standin), str(pins), mode, host, str(idx)]
    agent = topo.spawn_in(None, argv, env=env, stdin=subprocess.PIPE, text=True)
    assert agent.stdout.readline().strip() == "attached", agent.stderr.read()
    os.killpg(agent.pid, signal.SIGKILL)  # no cleanup whatsoever
    agent.wait()

    if mode == "tcx":
        assert (pins / "links" / f"{host}_ingress").exists()
        orphan_prog = pinned_link(pins / "links" / f"{host}_ingress").prog_id
        assert len(tcx_links({orphan_prog})) == 1  # the pinned link outlived its agent
    else:
        assert "mermin_ingress" in tc_filters(host, "ingress")

    with Datapath.load(standin, DatapathSettings(pin_root=pins)) as dp:
        att = Attacher(dp, mode=mode)
        assert att.cleanup_orphans({idx}) == 2
        assert att.stats.orphans_removed == 2
        assert "mermin" not in tc_filters(host, "ingress") + tc_filters(host, "egress")
        assert not has_clsact(host)
        if mode == "tcx":
            assert tcx_links({orphan_prog}) == []
            assert list((pins / "links").iterdir()) == []
        assert att.cleanup_orphans({idx}) == 0


def test_restarted_agent_adopts_pinned_links(standin: Path, pins: Path, topo: Topology) -> None:
    """A new agent takes over the pinned links (new program, same link): no counting gap."""
    host, _ = topo.veth()
    idx = topo.ifindex(host)
    with Datapath.load(standin, DatapathSettings(pin_root=pins)) as old:
        Attacher(old, mode="tcx").attach(idx, host)  # then "crash": no detach
    pin = pins / "links" / f"{host}_ingress"
    link_id = pinned_link(pin).id
    with Datapath.load(standin, DatapathSettings(pin_root=pins)) as new:
        att = Attacher(new, mode="tcx")
        att.attach(idx, host)
        assert att.stats.adopted == 2
        info = pinned_link(pin)
        assert info.id == link_id
        assert info.prog_id == libbpf.prog_info(new.program_fd("mermin_ingress")).id
        assert att.cleanup_orphans({idx}) == 0  # adopted links are ours, not orphans
        att.detach_all()
        assert_clean(new, host)
        assert tcx_links({info.prog_id}) == []
