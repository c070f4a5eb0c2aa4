"""The netlink watcher: message parsing, coalescing, overrun resync, namespaces, stopping."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest
from tests.interfaces.support import Links, fd_count, ifindex, ip, ip_batch, unique, wait_until

from mermin.interfaces.watcher import (
    IFF_UP,
    RTM_DELLINK,
    RTM_NEWLINK,
    Link,
    LinkEvent,
    LinkSocket,
    LinkWatcher,
    parse_link_messages,
)


def _msg(mtype: int, index: int, name: str, mac: bytes = b"", flags: int = 0) -> bytes:
    attrs = b""
    for atype, data in ((3, name.encode() + b"\0"), (1, mac)):
        if atype == 1 and not mac:
            continue
        attr = struct.pack("=HH", 4 + len(data), atype) + data
        attrs += attr + b"\0" * (-len(attr) % 4)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def test_parse_link_messages() -> None:
    buf = (
        _msg(RTM_NEWLINK, 7, "veth7", bytes.fromhex("0a1b2c3d4e5f"), IFF_UP)
        + _msg(RTM_DELLINK, 8, "veth8")
        + struct.pack("=IHHII", 20, 3, 2, 0, 0) + b"\0" * 4  # NLMSG_DONE
    )  # fmt: skip
    parsed, status, interrupted = parse_link_messages(buf)
    assert parsed == [
        (RTM_NEWLINK, Link(7, "veth7", IFF_UP, "0a:1b:2c:3d:4e:5f")),
        (RTM_DELLINK, Link(8, "veth8", 0, "")),
    ]
    assert parsed[0][1].up and not parsed[1][1].up
    assert status == 1 and not interrupted


def test_parse_error_and_truncation() -> None:
    err = struct.pack("=IHHII", 20, 2, 0, 0, 0) + struct.pack("=i", -1)
    assert parse_link_messages(err) == ([], -1, False)
    whole = _msg(RTM_NEWLINK, 3, "x")
    assert parse_link_messages(whole[:-3]) == ([], 0, False)  # truncated: ignored, no crash


class StateHandler:
    """Applies snapshots and events to a dict, like the manager does."""

    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.snapshots = 0
        self.batches: list[list[LinkEvent]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False
        self.idles = 0

    def on_snapshot(self, links: dict[int, Link]) -> None:
        self.gate.wait()
        self.snapshots += 1
        self.links = dict(links)

    def on_events(self, events: list[LinkEvent]) -> None:
        self.gate.wait()
        self.batches.append(events)
        for ev in events:
            if ev.link is None:
                self.links.pop(ev.index, None)
            else:
                self.links[ev.index] = ev.link
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("handler bug")

    def on_idle(self) -> None:
        self.idles += 1

    def names(self) -> set[str]:
        return {link.name for link in self.links.values()}


@pytest.mark.privileged
def test_drain_coalesces_per_ifindex(links: Links) -> None:
    sock = LinkSocket()
    try:
        name = links.veth(up=False)
        idx = ifindex(name)
        ip("link", "set", name, "up")
        ip("link", "set", name, "down")
        ip("link", "set", name, "up")
        time.sleep(0.05)
        events, count, overrun = sock.drain()
        mine = [e for e in events if e.index == idx]
        assert count >= 4 and not overrun
        assert len(mine) == 1 and mine[0].link is not None
        assert mine[0].link.name == name and mine[0].link.up  # the latest state only
        links.delete(name)
        time.sleep(0.05)
        events, _count, _ = sock.drain()
        assert LinkEvent(idx, None) in events
        assert all(e.link is None for e in events if e.index == idx)
    finally:
        sock.close()


@pytest.mark.privileged
def test_watcher_reports_add_rename_delete_and_stops_fast(links: Links) -> None:
    before = fd_count()
    handler = StateHandler()
    watcher = LinkWatcher(handler, idle_interval=0.05)
    watcher.start()
    try:
        assert handler.snapshots == 1
        assert "lo" in handler.names()
        name = links.veth()
        assert wait_until(lambda: name in handler.names(), 1.0)
        idx = ifindex(name)
        assert handler.links[idx].up
        assert handler.links[idx].mac.count(":") == 5
        new = unique("r")
        ip("link", "set", name, "down")
        ip("link", "set", name, "name", new)
        links.made.append(new)
        assert wait_until(lambda: handler.links.get(idx, Link(0, "")).name == new, 1.0)
        assert not handler.links[idx].up
        links.delete(new)
        assert wait_until(lambda: idx not in handler.links, 1.0)
        assert wait_until(lambda: handler.idles > 0, 1.0)
        assert watcher.stats.messages >= 4 and watcher.stats.events >= 3
    finally:
        t0 = time.monotonic()
        watcher.stop()
        elapsed = time.monotonic() - t0
    assert elapsed < 1.0
    assert not watcher.alive
    assert fd_count() == before  # netlink sockets and the wake pipe are closed


@pytest.mark.privileged
def test_call_runs_in_watcher_thread_and_propagates_errors(links: Links) -> None:
    watcher = LinkWatcher(StateHandler())
    watcher.start()
    try:
        assert watcher.call(threading.current_thread) is watcher._thread
        assert watcher.call(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            watcher.call(lambda: 1 / 0)
        assert watcher.alive  # a failing call does not stop the thread
    finally:
        watcher.stop()
    with pytest.raises(RuntimeError):
        watcher.call(lambda: None)


@pytest.mark.privileged
def test_handler_error_is_counted_not_fatal(links: Links) -> None:
    handler = StateHandler()
    watcher = LinkWatcher(handler)
    watcher.start()
    try:
        handler.fail_next = True
        first = links.veth()
        assert wait_until(lambda: watcher.stats.handler_errors == 1, 1.0)
        second = links.veth()
        assert wait_until(lambda: second in handler.names(), 1.0)
        assert first in handler.names()
        assert watcher.alive
    finally:
        watcher.stop()


@pytest.mark.privileged
def test_overrun_triggers_full_resync(links: Links) -> None:
    """A tiny receive buffer and a stalled handler: the kernel drops notifications (ENOBUFS);
    the watcher must recover the exact set of links from a dump."""
    handler = StateHandler()
    watcher = LinkWatcher(handler, rcvbuf=4096)
    watcher.start()
    tag = unique("o")[:9]  # 9 + 3 digits + 'p' <= 15 chars
    names = [f"{tag}{i:03d}" for i in range(150)]
    try:
        handler.gate.clear()  # stall the thread on the next batch
        links.veth()  # something to stall on
        time.sleep(0.1)
        ip_batch([f"link add {n} type veth peer name {n}p" for n in names])
        links.made.extend(names)
        handler.gate.set()
        assert wait_until(lambda: watcher.stats.overruns >= 1, 2.0), watcher.stats
        assert wait_until(lambda: set(names) <= handler.names(), 2.0)
        assert watcher.stats.resyncs >= 2
        ip_batch([f"link del {n}" for n in names])
        assert wait_until(lambda: not (set(names) & handler.names()), 3.0)
        assert watcher.alive
    finally:
        handler.gate.set()
        watcher.stop()


@pytest.mark.privileged
def test_watcher_in_other_namespace(links: Links, netns: str) -> None:
    path = f"/var/run/netns/{netns}"
    inside = Links(netns)
    outside = links.veth()
    handler = StateHandler()
    watcher = LinkWatcher(handler, netns_path=path)
    watcher.start()
    try:
        st = os.stat(path)
        assert watcher.call(lambda: os.stat("/proc/thread-self/ns/net").st_ino) == st.st_ino
        assert handler.names() == {"lo"}  # a fresh namespace has only lo
        name = inside.veth()
        assert wait_until(lambda: name in handler.names(), 1.0)
        assert outside not in handler.names()
        # our own thread never left the root namespace
        assert os.stat("/proc/thread-self/ns/net").st_ino != st.st_ino
    finally:
        watcher.stop()
        inside.cleanup()


@pytest.mark.privileged
def test_unsubscribed_watcher_only_snapshots(links: Links) -> None:
    handler = StateHandler()
    watcher = LinkWatcher(handler, subscribe=False)
    watcher.start()
    try:
        name = links.veth()
        time.sleep(0.2)
        assert name not in handler.names() and not handler.batches
        watcher.resync()
        assert name in handler.names()
        watcher.set_subscribed(True)
        later = links.veth()
        assert wait_until(lambda: later in handler.names(), 1.0)
    finally:
        watcher.stop()


@pytest.mark.privileged
def test_loop_failure_recovers_with_resync(links: Links) -> None:
    handler = StateHandler()
    watcher = LinkWatcher(handler)
    watcher.start()
    try:
        real_pump = watcher._pump

        def broken() -> None:
            watcher._pump = real_pump  # fail once
            raise RuntimeError("injected bug")

        watcher.call(setattr, watcher, "_pump", broken)
        name = links.veth()
        assert wait_until(lambda: watcher.stats.loop_errors == 1, 2.0)
        assert wait_until(lambda: name in handler.names(), 2.0)  # the resync found it
        assert watcher.alive
        later = links.veth()
        assert wait_until(lambda: later in handler.names(), 1.0)
    finally:
        watcher.stop()
