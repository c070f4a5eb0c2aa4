"""InterfaceManager: keeps the eBPF programs attached to exactly the matching interfaces.

State is reconciled per interface: an interface should carry the programs when it exists in
the namespace and its name matches the patterns; the manager attaches or detaches to make that
true after every netlink batch, snapshot (start-up, resync after an overrun), or
reconfiguration. Interfaces are attached whether or not they are up: a TC/TCX hook on a down
device is valid and costs nothing, and attaching at creation means the first packets after the
CNI brings a veth up are already seen. They are detached when they are deleted or leave the
namespace (renames are handled: a rename into or out of the patterns attaches or detaches).

All of this runs in the watcher thread, inside the target network namespace (see hostns.py);
`start`, `stop` and `reconfigure` hand their work to that thread and wait. `names`/`macs` are
immutable snapshots published by reference, so readers in other threads never lock.

With `auto_discover_interfaces = false` the thread still exists (it is where attach/detach
run) but it does not subscribe to link notifications: the interfaces matching at start-up (and
at each reconfigure) are attached, later ones are not.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from mermin.errors import DatapathError, PermissionDeniedError
from mermin.interfaces.hostns import resolve_netns
from mermin.interfaces.patterns import InterfaceMatcher
from mermin.interfaces.watcher import Link, LinkEvent, LinkWatcher
from mermin.telemetry import metrics
from mermin.telemetry.logging import RateLimitedLogger

if TYPE_CHECKING:
    from mermin.config.discovery import InstrumentConfig

__all__ = ["AttacherLike", "InterfaceManager", "InterfaceStats"]

log = logging.getLogger("mermin.interfaces")

_PROGRAMS_PER_INTERFACE = 2  # ingress + egress

# keys of InstrumentConfig that only a restart (a new Attacher / namespace) can apply
_RESTART_KEYS = ("attach_mode", "tcx_order", "tc_priority", "netns")


class AttacherLike(Protocol):
    """The part of `mermin.datapath.attach.Attacher` the manager uses."""

    def attach(self, ifindex: int, ifname: str) -> None: ...

    def detach(self, ifindex: int) -> None: ...

    def detach_all(self) -> None: ...


@dataclass(slots=True)
class InterfaceStats:
    """Counters (cumulative) plus the current number of attached interfaces."""

    attached: int = 0  # successful attaches
    detached: int = 0  # detaches (including interfaces whose hooks vanished with the device)
    attach_errors: int = 0  # attach failed on an interface that still exists
    detach_errors: int = 0  # detach failed on an interface that still exists
    vanished: int = 0  # attach raced with the interface's deletion (not an error)
    active: int = 0  # interfaces attached right now
    link_events: int = 0  # coalesced link events handled
    resyncs: int = 0  # snapshots handled (start-up, overruns, reconfigure without discovery)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _exists(ifindex: int) -> bool:
    """Whether `ifindex` exists in the calling thread's namespace."""
    try:
        socket.if_indextoname(ifindex)
    except OSError:
        return False
    return True


class InterfaceManager:
    """Attach the datapath to matching interfaces now and as they come and go."""

    def __init__(
        self,
        instrument_config: InstrumentConfig,
        attacher: AttacherLike,
        netns_path: str | None = None,
        *,
        name_ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`netns_path`: namespace to work in; None resolves `instrument_config.netns`."""
        self.config = instrument_config
        self.attacher = attacher
        self.netns_path = netns_path
        self.name_ttl = name_ttl
        self.stats = InterfaceStats()
        self._clock = clock
        self._matcher = InterfaceMatcher.from_config(instrument_config)
        self._links: dict[int, Link] = {}
        self._gone: dict[int, tuple[Link, float]] = {}  # deleted links kept for late lookups
        self._attached: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._macs: dict[int, str] = {}
        self._ratelog = RateLimitedLogger(log, interval=10.0)
        self._watcher: LinkWatcher | None = None
        self._orphans_cleaned = False
        self._stopping = False
        self._denied: PermissionDeniedError | None = None

    # -- lifecycle (any thread) ----------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Enter the namespace, attach to the matching interfaces, remove a previous agent's
        leftovers, start watching; return when the initial scan is done.

        The scan takes as long as the kernel needs: about 28 ms per interface with TCX, 6 ms
        with TC (docs/bench/interfaces.md), so by default there is no time limit; each step is
        a bounded system call. Raises DatapathError/PermissionDeniedError when the namespace
        or netlink is unusable, or when every attach was refused for lack of privileges.
        Attach failures on single interfaces are counted and logged, never raised.
        """
        if self._watcher is not None:
            raise RuntimeError("InterfaceManager already started")
        path = self.netns_path if self.netns_path is not None else resolve_netns(self.config.netns)
        self.netns_path = path
        self._watcher = LinkWatcher(
            self,
            netns_path=path,
            subscribe=self.config.auto_discover_interfaces,
            name="mermin-interfaces",
        )
        try:
            self._watcher.start(timeout)
        except OSError as err:
            self._watcher = None
            raise DatapathError(f"cannot watch network interfaces via netlink: {err}") from err
        except BaseException:
            self._watcher = None
            raise
        if self._denied is not None and not self._attached:
            # every attach at start-up was refused for lack of privileges: an agent that can
            # attach nowhere is a deployment error, not a per-interface problem
            denied = self._denied
            self.stop()
            raise denied
        log.info(
            "interfaces: %d attached of %d present (netns %s, discovery %s)",
            len(self._attached),
            len(self._links),
            path or "current",
            "on" if self.config.auto_discover_interfaces else "off",
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching and detach everything we attached."""
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        self._stopping = True  # a long attach burst in the thread stops at the next interface
        done = False
        try:
            if watcher.alive:
                watcher.call(self._detach_everything, timeout=timeout)
                done = True
        except Exception as err:
            log.warning("detaching interfaces in the netlink thread failed: %s", err)
        finally:
            watcher.stop()
        if not done and not watcher.alive:
            # the thread is gone: TCX links detach by fd from anywhere, and the attacher's TC
            # netlink socket was opened in the namespace, so this thread can finish the job
            self._detach_everything()

    def reconfigure(self, instrument_config: InstrumentConfig, timeout: float = 10.0) -> list[str]:
        """Apply new patterns and discovery mode; return the changed keys that need a restart.

        Waits up to `timeout` for the manager thread; if it is busy longer (a burst of
        attaches), the change stays queued and is applied when the thread gets to it."""
        restart = [k for k in _RESTART_KEYS
                   if getattr(instrument_config, k) != getattr(self.config, k)]  # fmt: skip
        if restart:
            log.warning(
                "discovery.instrument: %s changed; takes effect after a restart",
                ", ".join(restart),
            )
        watcher = self._watcher
        if watcher is None:
            self.config = instrument_config
            self._matcher = InterfaceMatcher.from_config(instrument_config)
            return restart
        try:
            watcher.call(self._apply_config, instrument_config, timeout=timeout)
        except concurrent.futures.TimeoutError:
            log.warning("interface manager busy (attach burst): new patterns apply when it is done")
        return restart

    # -- read side (any thread) ----------------------------------------------------------------

    @property
    def names(self) -> dict[int, str]:
        """ifindex -> name of every interface seen (deleted ones kept for `name_ttl` seconds)."""
        return self._names

    @property
    def macs(self) -> dict[int, str]:
        """ifindex -> MAC ("aa:bb:..", lowercase) of every interface seen that has one."""
        return self._macs

    @property
    def attached(self) -> dict[int, str]:
        """ifindex -> name of the interfaces carrying our programs right now (a copy)."""
        return dict(self._attached)

    @property
    def matcher(self) -> InterfaceMatcher:
        return self._matcher

    @property
    def watcher(self) -> LinkWatcher | None:
        return self._watcher

    def resync(self) -> None:
        """Re-read all links and reconcile (also what a reload does without discovery)."""
        if self._watcher is not None:
            self._watcher.resync()

    # -- LinkHandler (watcher thread) ----------------------------------------------------------

    def on_snapshot(self, links: dict[int, Link]) -> None:
        self.stats.resyncs += 1
        now = self._clock()
        for index, link in self._links.items():
            if index not in links:
                self._gone[index] = (link, now)
        for index in links:
            self._gone.pop(index, None)
        self._links = dict(links)
        for index in set(self._attached) | set(links):
            self._reconcile(index)
        if not self._orphans_cleaned:
            # first snapshot, inside the namespace: matching interfaces are attached first (so
            # the attacher can adopt a previous agent's pinned links and keep counting), then
            # whatever a previous agent left elsewhere is removed
            self._orphans_cleaned = True
            self._cleanup_orphans()
        self._publish()

    def on_events(self, events: list[LinkEvent]) -> None:
        now = self._clock()
        self.stats.link_events += len(events)
        for event in events:
            if event.link is None:
                old = self._links.pop(event.index, None)
                if old is not None:
                    self._gone[event.index] = (old, now)
            else:
                self._links[event.index] = event.link
                self._gone.pop(event.index, None)
            self._reconcile(event.index)
        self._publish()

    def on_idle(self) -> None:
        if self._expire_gone():
            self._publish()

    # -- internals (watcher thread) ------------------------------------------------------------

    def _apply_config(self, config: InstrumentConfig) -> None:
        old = self.config
        self.config = config
        self._matcher = InterfaceMatcher.from_config(config)
        assert self._watcher is not None
        if config.auto_discover_interfaces != old.auto_discover_interfaces:
            self._watcher.set_subscribed(config.auto_discover_interfaces)  # on: also resyncs
        if config.auto_discover_interfaces:
            for index in set(self._attached) | set(self._links):
                self._reconcile(index)
            self._publish()
        else:  # no notifications: re-read the links so the new patterns see today's list
            self._watcher.resync()

    def _cleanup_orphans(self) -> None:
        """Remove hooks a previous agent left behind (pinned TCX links, named TC filters)."""
        cleanup = getattr(self.attacher, "cleanup_orphans", None)
        if cleanup is None:
            return
        try:
            cleanup()
        except Exception as err:
            log.warning("cleaning up orphaned programs failed: %s", err)

    def _reconcile(self, index: int) -> None:
        link = self._links.get(index)
        want = link is not None and self._matcher.matches(link.name)
        if want and index not in self._attached:
            if self._stopping:
                return
            assert link is not None
            self._attach(link)
        elif not want and index in self._attached:
            self._detach(index, present=link is not None)
        elif want and link is not None and self._attached[index] != link.name:
            self._attached[index] = link.name  # renamed, still matching: hooks stay

    def _attach(self, link: Link) -> None:
        try:
            self.attacher.attach(link.index, link.name)
        except Exception as err:
            if isinstance(err, PermissionDeniedError):
                self._denied = err
            if not _exists(link.index):
                self.stats.vanished += 1
                log.debug("interface %s (%d) vanished before attach", link.name, link.index)
                return
            self.stats.attach_errors += 1
            metrics.ATTACH_ERRORS.labels("attach").inc()
            self._ratelog.warning(
                "attach",
                "cannot attach to interface %s (ifindex %d): %s (%d attach errors so far)",
                link.name,
                link.index,
                err,
                self.stats.attach_errors,
            )
            return
        self._attached[link.index] = link.name
        self.stats.attached += 1
        self.stats.active = len(self._attached)
        metrics.EBPF_TC_PROGRAMS.labels("attached").inc(_PROGRAMS_PER_INTERFACE)

    def _detach(self, index: int, *, present: bool) -> None:
        name = self._attached.pop(index)
        self.stats.active = len(self._attached)
        try:
            self.attacher.detach(index)
        except Exception as err:
            if present and _exists(index):
                self.stats.detach_errors += 1
                metrics.ATTACH_ERRORS.labels("detach").inc()
                self._ratelog.warning(
                    "detach", "cannot detach from interface %s (ifindex %d): %s", name, index, err
                )
                return
            # the device is gone: the kernel already dropped its TC/TCX hooks
            log.debug("detach of vanished interface %s (%d): %s", name, index, err)
        self.stats.detached += 1
        metrics.EBPF_TC_PROGRAMS.labels("detached").inc(_PROGRAMS_PER_INTERFACE)

    def _detach_everything(self) -> None:
        count = len(self._attached)
        try:
            self.attacher.detach_all()
        except Exception as err:
            self.stats.detach_errors += 1
            metrics.ATTACH_ERRORS.labels("detach").inc()
            log.warning("detach_all failed: %s", err)
        self.stats.detached += count
        metrics.EBPF_TC_PROGRAMS.labels("detached").inc(count * _PROGRAMS_PER_INTERFACE)
        self._attached.clear()
        self.stats.active = 0
        metrics.INTERFACES_ATTACHED.set(0)

    def _expire_gone(self) -> bool:
        if not self._gone:
            return False
        limit = self._clock() - self.name_ttl
        old = [i for i, (_link, since) in self._gone.items() if since < limit]
        for index in old:
            del self._gone[index]
        return bool(old)

    def _publish(self) -> None:
        self._expire_gone()
        names: dict[int, str] = {i: link.name for i, (link, _t) in self._gone.items()}
        macs: dict[int, str] = {i: link.mac for i, (link, _t) in self._gone.items() if link.mac}
        for index, link in self._links.items():
            names[index] = link.name
            if link.mac:
                macs[index] = link.mac
        self._names = names
        self._macs = macs
        metrics.INTERFACES_ATTACHED.set(len(self._attached))
