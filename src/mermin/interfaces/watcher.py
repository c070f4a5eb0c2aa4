"""Netlink link watcher: one daemon thread that owns the rtnetlink sockets of a namespace.

The thread enters the target network namespace (see hostns.py), subscribes to RTMGRP_LINK,
dumps the current links and hands them to a handler as a snapshot, then reports link changes in
batches. It also runs callables submitted from other threads (`call`), so everything that names
an ifindex (attach, detach) happens in the one thread that lives in the right namespace.

Bursts: each wake-up drains every queued message and coalesces them per ifindex (the latest
state wins, a delete in between is kept), so thousands of veths appearing and vanishing cost one
handler call per batch. When the kernel reports ENOBUFS the socket overran and messages were
lost: the watcher then takes a fresh dump and hands over a full snapshot (a resync). It never
raises out of its loop; handler failures are logged and counted.

We speak rtnetlink directly (struct, no per-message object trees): the messages we need are
three fixed headers and three attributes, and pyroute2's generic parser costs ~100 µs per
RTM_NEWLINK, which matters during churn.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from mermin.interfaces.hostns import setns

__all__ = [
    "Link",
    "LinkEvent",
    "LinkHandler",
    "LinkSocket",
    "LinkWatcher",
    "WatcherStats",
    "parse_link_messages",
]

log = logging.getLogger("mermin.interfaces")

T = TypeVar("T")

# rtnetlink constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h)
NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x2, 0x10, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_OPERSTATE, IFLA_EXT_MASK = 1, 3, 16, 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
SO_RCVBUFFORCE = 33

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type
_DUMP_REQUEST_LEN = _NLMSGHDR.size + _IFINFOMSG.size + 8


@dataclass(frozen=True, slots=True)
class Link:
    """One interface as netlink describes it."""

    index: int
    name: str
    flags: int = 0
    mac: str = ""

    @property
    def up(self) -> bool:
        """Administratively up (IFF_UP)."""
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A change: `link` is the new state, or None when the interface was deleted (`index`)."""

    index: int
    link: Link | None

    @property
    def deleted(self) -> bool:
        return self.link is None


@dataclass(slots=True)
class WatcherStats:
    """Counters of the watcher thread (read from any thread; ints are updated atomically)."""

    messages: int = 0  # RTM_NEWLINK/DELLINK notifications received
    events: int = 0  # events handed to the handler after coalescing
    batches: int = 0
    overruns: int = 0  # ENOBUFS: the kernel dropped notifications (each causes a resync)
    resyncs: int = 0  # full dumps handed over as snapshots (start-up included)
    handler_errors: int = 0
    socket_errors: int = 0
    loop_errors: int = 0  # unexpected failures of the loop itself (it restarts)


class LinkHandler(Protocol):
    """What the watcher reports to. Called in the watcher thread (inside the namespace)."""

    def on_snapshot(self, links: dict[int, Link]) -> None: ...

    def on_events(self, events: list[LinkEvent]) -> None: ...

    def on_idle(self) -> None: ...


def _format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_link_messages(
    buf: bytes | bytearray | memoryview,
) -> tuple[list[tuple[int, Link]], int, bool]:
    """Parse a netlink buffer into [(msg_type, Link)], plus (error/done status, interrupted).

    The status is 0 for "more to come", 1 for NLMSG_DONE, or -errno for NLMSG_ERROR.
    """
    out: list[tuple[int, Link]] = []
    status = 0
    interrupted = False
    off, end = 0, len(buf)
    while off + _NLMSGHDR.size <= end:
        length, mtype, flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, off)
        if length < _NLMSGHDR.size or off + length > end:
            break
        if flags & NLM_F_DUMP_INTR:
            interrupted = True
        if mtype in (RTM_NEWLINK, RTM_DELLINK) and length >= _NLMSGHDR.size + _IFINFOMSG.size:
            _fam, _typ, index, ifflags, _chg = _IFINFOMSG.unpack_from(buf, off + _NLMSGHDR.size)
            name, mac = "", ""
            a = off + _NLMSGHDR.size + _IFINFOMSG.size
            msg_end = off + length
            while a + _RTATTR.size <= msg_end:
                alen, atype = _RTATTR.unpack_from(buf, a)
                if alen < _RTATTR.size:
                    break
                atype &= 0x3FFF  # strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
                if atype == IFLA_IFNAME:
                    name = bytes(buf[a + 4 : a + alen]).split(b"\0", 1)[0].decode(errors="replace")
                elif atype == IFLA_ADDRESS:
                    mac = _format_mac(bytes(buf[a + 4 : a + alen]))
                a += (alen + 3) & ~3
            out.append((mtype, Link(index, name, ifflags, mac)))
        elif mtype == NLMSG_DONE:
            status = 1
        elif mtype == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", buf, off + _NLMSGHDR.size)
            if code != 0:
                status = code
        off += (length + 3) & ~3
    return out, status, interrupted


class LinkSocket:
    """Raw rtnetlink sockets of the calling thread's namespace: one subscribed, one for dumps.

    Create it in the thread (namespace) it is meant for: a socket belongs to the namespace of
    the thread that opened it.
    """

    def __init__(self, *, subscribe: bool = True, rcvbuf: int = 16 << 20) -> None:
        self._seq = int(time.time()) & 0xFFFF
        self._dump = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE)  # fmt: skip
        self._dump.bind((0, 0))
        self._dump.settimeout(5.0)
        self._events: socket.socket | None = None
        self._rcvbuf = rcvbuf
        if subscribe:
            self.subscribe()

    def subscribe(self) -> None:
        """Join RTMGRP_LINK (idempotent). Subscribe before dumping so no change is missed."""
        if self._events is not None:
            return
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_ROUTE)  # fmt: skip
        try:
            try:  # root may exceed net.core.rmem_max; burst headroom for thousands of links
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._events = sock

    def unsubscribe(self) -> None:
        """Leave the group and drop whatever is queued."""
        if self._events is not None:
            self._events.close()
            self._events = None

    @property
    def subscribed(self) -> bool:
        return self._events is not None

    def fileno(self) -> int:
        """The fd to poll for notifications (-1 when not subscribed)."""
        return self._events.fileno() if self._events is not None else -1

    def dump(self, attempts: int = 5) -> dict[int, Link]:
        """All links of the namespace, retried when the kernel flags the dump as interrupted."""
        links: dict[int, Link] = {}
        for _ in range(attempts):
            links, interrupted = self._dump_once()
            if not interrupted:
                break
        return links

    def _dump_once(self) -> tuple[dict[int, Link], bool]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        req = bytearray(_DUMP_REQUEST_LEN)
        _NLMSGHDR.pack_into(req, 0, _DUMP_REQUEST_LEN, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP,
                            self._seq, 0)  # fmt: skip
        _IFINFOMSG.pack_into(req, _NLMSGHDR.size, socket.AF_UNSPEC, 0, 0, 0, 0)
        off = _NLMSGHDR.size + _IFINFOMSG.size
        _RTATTR.pack_into(req, off, 8, IFLA_EXT_MASK)
        struct.pack_into("=I", req, off + 4, RTEXT_FILTER_SKIP_STATS)
        self._dump.send(req)
        links: dict[int, Link] = {}
        interrupted = False
        buf = bytearray(1 << 16)
        while True:
            n = self._dump.recv_into(buf)
            parsed, status, intr = parse_link_messages(memoryview(buf)[:n])
            interrupted |= intr
            for mtype, link in parsed:
                if mtype == RTM_NEWLINK:
                    links[link.index] = link
            if status < 0:
                raise OSError(-status, f"link dump failed: {os.strerror(-status)}")
            if status == 1:
                return links, interrupted

    def drain(self, limit: int = 100_000) -> tuple[list[LinkEvent], int, bool]:
        """Read every queued notification; coalesce per ifindex.

        Returns (events, messages read, overrun). On overrun the events are incomplete and the
        caller must resync with `dump()`.
        """
        if self._events is None:
            return [], 0, False
        pending: dict[int, list[Any]] = {}  # index -> [deleted_in_between, latest Link | None]
        overrun = False
        count = 0
        buf = bytearray(1 << 16)
        while count < limit:
            try:
                n = self._events.recv_into(buf)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    overrun = True
                    continue
                raise
            parsed, _status, _intr = parse_link_messages(memoryview(buf)[:n])
            for mtype, link in parsed:
                count += 1
                slot = pending.get(link.index)
                if slot is None:
                    slot = pending[link.index] = [False, None]
                if mtype == RTM_DELLINK:
                    slot[0], slot[1] = True, None
                else:
                    slot[1] = link
        events: list[LinkEvent] = []
        for index, (deleted, link) in pending.items():
            if deleted:
                events.append(LinkEvent(index, None))
            if link is not None:
                events.append(LinkEvent(index, link))
        return events, count, overrun

    def close(self) -> None:
        self.unsubscribe()
        self._dump.close()


class LinkWatcher:
    """The daemon thread: namespace, netlink, handler calls, and calls submitted by others."""

    def __init__(
        self,
        handler: LinkHandler,
        *,
        netns_path: str | None = None,
        subscribe: bool = True,
        idle_interval: float = 5.0,
        rcvbuf: int = 16 << 20,
        name: str = "mermin-netlink",
    ) -> None:
        self.handler = handler
        self.netns_path = netns_path
        self.stats = WatcherStats()
        self._subscribe = subscribe
        self._idle_interval = idle_interval
        self._rcvbuf = rcvbuf
        self._name = name
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = threading.Event()
        self._started: Future[None] = Future()
        self._thread: threading.Thread | None = None
        self._sock: LinkSocket | None = None

    # -- public API (any thread) -------------------------------------------------------------

    def start(self, timeout: float | None = 30.0) -> None:
        """Start the thread; return after the first snapshot was handled (re-raise its error)."""
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        try:
            self._started.result(timeout)
        except BaseException:
            self.stop()
            raise

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 30.0) -> T:
        """Run `fn(*args)` in the watcher thread (inside the namespace) and return its result."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        if not self.alive:
            raise RuntimeError("netlink watcher thread is not running")
        fut: Future[T] = Future()
        self._calls.append((fn, args, fut))
        self._wake()
        return fut.result(timeout)

    def set_subscribed(self, subscribed: bool) -> None:
        """Turn link notifications on or off (turning them on resyncs)."""
        self._subscribe = subscribed
        self.call(self._apply_subscription)

    def resync(self) -> None:
        """Take a fresh dump and hand it to the handler as a snapshot."""
        self.call(self._resync)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread and close its sockets (returns within about `timeout`)."""
        self._stopping.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("netlink watcher thread did not stop within %.1fs", timeout)
                return
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # -- the thread ----------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        try:
            if self.netns_path is not None:
                setns(self.netns_path)
            self._sock = LinkSocket(subscribe=self._subscribe, rcvbuf=self._rcvbuf)
            self._resync()
        except BaseException as err:
            self._started.set_exception(err)
            self._close_socket()
            return
        self._started.set_result(None)
        try:
            while not self._stopping.is_set():
                try:
                    self._loop()
                except Exception:  # a bug must not silently end discovery: log, resync, go on
                    self.stats.loop_errors += 1
                    log.exception("netlink watcher loop failed; resyncing")
                    if self._stopping.wait(0.5):
                        break
                    self._reopen()
        finally:
            self._fail_pending_calls()
            self._close_socket()

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        registered = -1
        last_idle = time.monotonic()
        while not self._stopping.is_set():
            if self._sock is None:  # a failed reopen: try again (waits 1 s on failure)
                self._reopen()
                continue
            fd = self._sock.fileno()
            if fd != registered:
                if registered >= 0:
                    with contextlib.suppress(KeyError, ValueError):
                        poller.unregister(registered)
                if fd >= 0:
                    poller.register(fd, select.POLLIN)
                registered = fd
            ready = poller.poll(max(0.0, self._idle_interval) * 1000)
            if self._stopping.is_set():
                break
            for rfd, _mask in ready:
                if rfd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                elif rfd == registered:
                    self._pump()
            self._run_calls()
            now = time.monotonic()
            if now - last_idle >= self._idle_interval:
                last_idle = now
                self._guard(self.handler.on_idle)

    def _pump(self) -> None:
        """Drain notifications; resync after an overrun; report the coalesced batch."""
        assert self._sock is not None
        try:
            events, count, overrun = self._sock.drain()
        except OSError as err:
            self.stats.socket_errors += 1
            log.warning("netlink read failed (%s): reopening the socket and resyncing", err)
            self._reopen()
            return
        self.stats.messages += count
        if overrun:
            self.stats.overruns += 1
            log.info("netlink socket overran (burst of link changes): resyncing from a dump")
            self._resync()
            return
        if events:
            self.stats.events += len(events)
            self.stats.batches += 1
            self._guard(self.handler.on_events, events)

    def _resync(self) -> None:
        assert self._sock is not None
        try:
            links = self._sock.dump()
        except OSError as err:
            self.stats.socket_errors += 1
            log.warning("netlink link dump failed: %s", err)
            if not self._started.done():
                raise
            return
        self.stats.resyncs += 1
        if self._started.done():
            self._guard(self.handler.on_snapshot, links)
        else:  # start-up: let the caller of start() see handler failures
            self.handler.on_snapshot(links)

    def _reopen(self) -> None:
        self._close_socket()
        try:
            self._sock = LinkSocket(subscribe=self._subscribe, rcvbuf=self._rcvbuf)
        except OSError as err:
            self.stats.socket_errors += 1
            log.error("cannot reopen the netlink socket: %s; retrying in 1s", err)
            self._stopping.wait(1.0)
            return
        self._resync()

    def _apply_subscription(self) -> None:
        if self._sock is None:
            return
        if self._subscribe and not self._sock.subscribed:
            self._sock.subscribe()
            self._resync()
        elif not self._subscribe and self._sock.subscribed:
            self._sock.unsubscribe()

    def _run_calls(self) -> None:
        while self._calls:
            fn, args, fut = self._calls.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as err:
                fut.set_exception(err)

    def _fail_pending_calls(self) -> None:
        while self._calls:
            _fn, _args, fut = self._calls.popleft()
            if fut.set_running_or_notify_cancel():
                fut.set_exception(RuntimeError("netlink watcher stopped"))

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("interface handler failed (continuing)")

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
