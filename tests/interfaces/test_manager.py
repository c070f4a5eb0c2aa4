"""InterfaceManager on real veths with a recording attacher (the kernel-attach tests are in
test_real_attach.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from tests.interfaces.support import (
    Links,
    RecordingAttacher,
    fd_count,
    ifindex,
    ip,
    ip_batch,
    unique,
    wait_until,
)

from mermin.config.discovery import InstrumentConfig
from mermin.errors import DatapathError, PermissionDeniedError
from mermin.interfaces.manager import InterfaceManager
from mermin.interfaces.watcher import Link, LinkEvent
from mermin.telemetry import metrics

pytestmark = pytest.mark.privileged


def config(tag: str, **kw: object) -> InstrumentConfig:
    return InstrumentConfig(interfaces=[f"{tag}*"], netns="current", **kw)


@pytest.fixture
def tag() -> str:
    return unique("t")[:8]  # our own names start with this; room for 7 more characters


def make(tag: str, suffix: str) -> str:
    return f"{tag}{suffix}"


def test_initial_scan_then_attach_and_detach_within_1s(links: Links, tag: str) -> None:
    early = links.veth(make(tag, "a"))
    down = links.veth(make(tag, "d"), up=False)  # attached too: up or down does not matter
    other = links.veth()  # does not match
    attacher = RecordingAttacher()
    mgr = InterfaceManager(config(tag), attacher)
    mgr.start()
    try:
        assert attacher.names() == {early, down}
        assert attacher.orphan_cleanups == 1
        assert mgr.stats.attached == 2 and mgr.stats.active == 2
        assert mgr.names[ifindex(other)] == other  # names cover every interface seen
        t0 = time.monotonic()
        late = links.veth(make(tag, "b"))
        assert wait_until(lambda: late in attacher.names(), 1.0)
        latency = time.monotonic() - t0
        assert latency < 1.0
        idx = ifindex(late)
        mac = ip("-o", "link", "show", "dev", late).stdout.split("link/ether ")[1].split()[0]
        assert mgr.macs[idx] == mac
        links.delete(late)
        assert wait_until(lambda: ("detach", idx) in attacher.calls, 1.0)
        assert mgr.names[idx] == late  # kept after deletion for late reports
        assert idx not in mgr.attached
        assert mgr.stats.detached == 1
    finally:
        mgr.stop()
    assert ("detach_all",) in attacher.calls
    assert mgr.stats.active == 0


def test_rename_into_and_out_of_patterns(links: Links, tag: str) -> None:
    attacher = RecordingAttacher()
    mgr = InterfaceManager(config(tag), attacher)
    mgr.start()
    try:
        outside = links.veth()
        idx = ifindex(outside)
        inside = make(tag, "r")
        ip("link", "set", outside, "down")
        ip("link", "set", outside, "name", inside)
        links.made.append(inside)
        assert wait_until(lambda: mgr.attached.get(idx) == inside, 1.0)
        renamed = make(tag, "s")  # still matching: stays attached, name follows
        ip("link", "set", inside, "name", renamed)
        links.made.append(renamed)
        assert wait_until(lambda: mgr.names.get(idx) == renamed, 1.0)
        assert mgr.attached.get(idx) == renamed
        assert mgr.stats.attached == 1
        gone = unique("x")
        ip("link", "set", renamed, "name", gone)
        links.made.append(gone)
        assert wait_until(lambda: idx not in mgr.attached, 1.0)
        assert ("detach", idx) in attacher.calls
        assert mgr.stats.detached == 1
    finally:
        mgr.stop()


def test_auto_discover_false_attaches_only_at_start(links: Links, tag: str) -> None:
    first = links.veth(make(tag, "a"))
    attacher = RecordingAttacher()
    mgr = InterfaceManager(config(tag, auto_discover_interfaces=False), attacher)
    mgr.start()
    try:
        assert attacher.names() == {first}
        assert mgr.watcher is not None and mgr.watcher.stats.messages == 0
        later = links.veth(make(tag, "b"))
        time.sleep(0.3)
        assert later not in attacher.names()  # no discovery
        # a reload re-reads the interfaces once with the (new) patterns
        mgr.reconfigure(config(tag, auto_discover_interfaces=False))
        assert attacher.names() == {first, later}
        # without notifications a deleted interface is released at the next reload
        first_idx = ifindex(first)
        links.delete(first)
        mgr.reconfigure(config(tag, auto_discover_interfaces=False))
        assert ("detach", first_idx) in attacher.calls
        assert attacher.names() == {later}
        # turning discovery on subscribes and resyncs
        mgr.reconfigure(config(tag))
        third = links.veth(make(tag, "c"))
        assert wait_until(lambda: third in attacher.names(), 1.0)
    finally:
        mgr.stop()


def test_reconfigure_patterns(links: Links, tag: str) -> None:
    a = links.veth(make(tag, "a1"))
    b = links.veth(make(tag, "b1"))
    attacher = RecordingAttacher()
    mgr = InterfaceManager(InstrumentConfig(interfaces=[f"{tag}a*"], netns="current"), attacher)
    mgr.start()
    try:
        assert attacher.names() == {a}
        restart = mgr.reconfigure(
            InstrumentConfig(interfaces=[f"/^{tag}b/"], netns="current", tc_priority=5)
        )
        assert restart == ["tc_priority"]
        assert attacher.names() == {b}
        assert ("detach", ifindex(a)) in attacher.calls
        mgr.reconfigure(InstrumentConfig(interfaces=[f"{tag}*"], exclude=[b], netns="current"))
        assert attacher.names() == {a}
    finally:
        mgr.stop()


def _metric(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_attach_errors_are_counted_not_fatal(links: Links, tag: str) -> None:
    bad = make(tag, "bad")
    attacher = RecordingAttacher(fail_names=(bad,))
    links.veth(bad)
    errors_before = _metric("mermin_ebpf_attach_errors_total", operation="attach")
    mgr = InterfaceManager(config(tag), attacher)
    mgr.start()
    try:
        assert mgr.stats.attach_errors == 1 and mgr.stats.active == 0
        assert _metric("mermin_ebpf_attach_errors_total", operation="attach") == errors_before + 1
        good = links.veth(make(tag, "ok"))
        assert wait_until(lambda: good in attacher.names(), 1.0)
        assert mgr.watcher is not None and mgr.watcher.alive
        assert _metric("mermin_interfaces_attached") == 1
    finally:
        mgr.stop()
    assert _metric("mermin_interfaces_attached") == 0


def test_detach_failures(links: Links, tag: str) -> None:
    """A detach that fails on a deleted interface is fine (the kernel dropped the hooks with
    the device); one that fails on a live interface is an error, counted, not fatal."""
    attacher = RecordingAttacher(fail_detach=True)
    mgr = InterfaceManager(config(tag), attacher)
    mgr.start()
    try:
        gone = links.veth(make(tag, "g"))
        kept = links.veth(make(tag, "k"))
        assert wait_until(lambda: {gone, kept} <= attacher.names(), 1.0)
        links.delete(gone)
        assert wait_until(lambda: mgr.stats.detached == 1, 1.0)
        assert mgr.stats.detach_errors == 0
        renamed = unique("x")
        ip("link", "set", kept, "name", renamed)
        links.made.append(renamed)
        assert wait_until(lambda: mgr.stats.detach_errors == 1, 1.0)
        assert mgr.stats.active == 0
        assert mgr.watcher is not None and mgr.watcher.alive
    finally:
        mgr.stop()


def test_attach_racing_deletion_counts_vanished(links: Links, tag: str) -> None:
    """Create+delete bursts: nothing stays attached, no error is reported; an attach for a link
    that is already gone (stale event) fails like the kernel would and counts as vanished."""
    attacher = RecordingAttacher()
    mgr = InterfaceManager(config(tag), attacher)
    mgr.start()
    try:
        assert mgr.watcher is not None
        names = [make(tag, f"{i:02d}") for i in range(40)]
        stall = threading.Thread(target=mgr.watcher.call, args=(time.sleep, 0.3))
        stall.start()  # the burst lands while the manager thread is busy
        ip_batch([f"link add {n} type veth peer name {n}p" for n in names])
        ip_batch([f"link del {n}" for n in names])
        stall.join()
        assert wait_until(lambda: mgr.stats.link_events >= 40, 2.0)
        time.sleep(0.2)
        assert mgr.stats.attach_errors == 0
        assert mgr.stats.active == 0 and not attacher.attached
        assert mgr.stats.attached == mgr.stats.detached
        # a stale "new link" event for an ifindex that no longer exists
        ghost = make(tag, "gh")
        links.veth(ghost)
        assert wait_until(lambda: ghost in attacher.names(), 1.0)
        idx = ifindex(ghost)
        links.delete(ghost)
        assert wait_until(lambda: idx not in mgr.attached, 1.0)
        vanished = mgr.stats.vanished
        mgr.watcher.call(mgr.on_events, [LinkEvent(idx, Link(idx, ghost))])
        assert mgr.stats.vanished == vanished + 1
        assert mgr.stats.attach_errors == 0
    finally:
        mgr.stop()


def test_manager_in_test_netns(links: Links, netns: str, tag: str) -> None:
    """netns_path points at a test namespace: its interfaces are seen and attached *from inside
    it* (the attacher resolves ifindexes in the calling thread's namespace, like TCX)."""
    path = f"/var/run/netns/{netns}"
    inside = Links(netns)
    root_twin = links.veth(make(tag, "a"))  # same pattern, root namespace: must be ignored
    try:
        pre = inside.veth(make(tag, "p"))
        attacher = RecordingAttacher()
        mgr = InterfaceManager(config(tag), attacher, netns_path=path)
        mgr.start()
        try:
            assert attacher.names() == {pre}
            st = os.stat(path)
            assert attacher.netns_seen == {(st.st_dev, st.st_ino)}
            added = inside.veth(make(tag, "q"))
            assert wait_until(lambda: added in attacher.names(), 1.0)
            assert root_twin not in attacher.names()
            idx = ifindex(added, netns=netns)
            assert mgr.names[idx] == added
            inside.delete(added)
            assert wait_until(lambda: idx not in attacher.attached, 1.0)
        finally:
            mgr.stop()
    finally:
        inside.cleanup()


def test_netns_setting_path_and_missing_namespace(netns: str, tag: str) -> None:
    inside = Links(netns)
    try:
        name = inside.veth(make(tag, "n"))
        attacher = RecordingAttacher()
        cfg = InstrumentConfig(interfaces=[f"{tag}*"], netns=f"/var/run/netns/{netns}")
        mgr = InterfaceManager(cfg, attacher)  # netns_path=None: taken from the config
        mgr.start()
        mgr.stop()
        assert ("attach", ifindex(name, netns=netns), name) in attacher.calls
    finally:
        inside.cleanup()
    bad = InstrumentConfig(netns="/var/run/netns/mi-does-not-exist")
    with pytest.raises(DatapathError, match="does not exist"):
        InterfaceManager(bad, RecordingAttacher()).start()


def test_stop_is_fast_and_leaks_no_fds(links: Links, tag: str) -> None:
    before = fd_count()
    links.veth(make(tag, "a"))
    mgr = InterfaceManager(config(tag), RecordingAttacher())
    mgr.start()
    t0 = time.monotonic()
    mgr.stop()
    assert time.monotonic() - t0 < 1.0
    assert fd_count() == before
    mgr.stop()  # idempotent


def test_deleted_names_expire(links: Links, tag: str) -> None:
    now = [0.0]
    mgr = InterfaceManager(config(tag), RecordingAttacher(), name_ttl=10.0, clock=lambda: now[0])
    mgr.start()
    try:
        name = links.veth(make(tag, "e"))
        assert wait_until(lambda: name in mgr.names.values(), 1.0)
        idx = ifindex(name)
        links.delete(name)
        assert wait_until(lambda: idx not in mgr.attached, 1.0)
        assert mgr.names[idx] == name
        now[0] = 11.0
        assert mgr.watcher is not None
        mgr.watcher.call(mgr.on_idle)
        assert idx not in mgr.names
    finally:
        mgr.stop()


class SlowAttacher(RecordingAttacher):
    def attach(self, ifindex: int, ifname: str) -> None:
        time.sleep(0.05)
        super().attach(ifindex, ifname)


def test_stop_during_attach_burst_and_queued_reconfigure(links: Links, tag: str) -> None:
    """100 new interfaces at 50 ms per attach is a 5 s burst: a reconfigure waits briefly and
    stays queued, and stop() cuts the burst short, detaches, and returns quickly."""
    attacher = SlowAttacher()
    mgr = InterfaceManager(config(tag), attacher)
    mgr.start()
    names = [make(tag, f"{i:03d}") for i in range(100)]
    try:
        ip_batch([f"link add {n} type veth peer name {n}p" for n in names])
        links.made.extend(names)
        assert wait_until(lambda: len(attacher.names()) >= 2, 2.0)
        t0 = time.monotonic()
        assert mgr.reconfigure(config(tag), timeout=0.2) == []
        assert time.monotonic() - t0 < 0.5
    finally:
        t0 = time.monotonic()
        mgr.stop()
        elapsed = time.monotonic() - t0
    assert elapsed < 1.5
    assert attacher.calls[-1] == ("detach_all",)
    assert 2 <= mgr.stats.attached < 100
    assert not attacher.attached


class DeniedAttacher(RecordingAttacher):
    def attach(self, ifindex: int, ifname: str) -> None:
        raise PermissionDeniedError("attaching TCX ingress: permission denied; grant CAP_BPF")


def test_start_fails_when_every_attach_is_denied(links: Links, tag: str) -> None:
    links.veth(make(tag, "a"))
    attacher = DeniedAttacher()
    mgr = InterfaceManager(config(tag), attacher)
    with pytest.raises(PermissionDeniedError, match="CAP_BPF"):
        mgr.start()
    assert mgr.watcher is None
    assert ("detach_all",) in attacher.calls
