"""Attaching the two programs to interfaces: TCX links, or clsact + cls_bpf.

TCX (kernel 6.6+) is used when the kernel has it (probed once), classic TC otherwise;
`mode="tcx"|"tc"` forces one. Both programs are attached to an interface or neither: a
failure on the second direction rolls the first back.

TCX links are pinned at `<pin_root>/links/<ifname>_<ingress|egress>`: they keep counting into
the pinned maps while the agent restarts, and a new agent adopts them (replacing the program
atomically with `BPF_LINK_UPDATE`) or removes them (`cleanup_orphans`). TC filters carry the
name `mermin_<direction>` so `cleanup_orphans` can find them; a clsact qdisc is removed only if
we created it (recorded as an empty directory `<pin_root>/qdiscs/<ifindex>`, so this holds
across restarts too).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from mermin.errors import DatapathError, PermissionDeniedError

from . import libbpf
from .loader import Datapath

__all__ = ["DIRECTIONS", "AttachStats", "Attacher", "probe_tcx"]

log = logging.getLogger("mermin.datapath.attach")

DIRECTIONS = ("ingress", "egress")
_TCX_TYPE = {"ingress": libbpf.BPF_TCX_INGRESS, "egress": libbpf.BPF_TCX_EGRESS}
_TC_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}  # clsact ingress / egress
_TC_HANDLE = 1
_NAME_PREFIX = "mermin"
_GONE = (errno.ENODEV, errno.ENOENT, errno.ENXIO)


def probe_tcx(prog_fd: int) -> bool:
    """True when the kernel has TCX: a link on ifindex 0 fails with ENODEV, not EINVAL."""
    try:
        fd = libbpf.link_create(prog_fd, 0, libbpf.BPF_TCX_INGRESS)
    except PermissionDeniedError:
        raise
    except DatapathError as exc:
        return "No such device" in str(exc)
    libbpf.link_detach(fd)  # cannot happen (no interface 0), but never leave a link behind
    libbpf.close_fd(fd)
    return True


@dataclass(slots=True)
class AttachStats:
    attached: int = 0
    detached: int = 0
    failures: int = 0
    adopted: int = 0  # pinned TCX links of a previous agent taken over
    orphans_removed: int = 0


@dataclass(slots=True)
class _Attachment:
    ifname: str
    links: dict[str, tuple[int, Path | None]] = field(default_factory=dict)  # tcx: fd, pin
    filters: list[str] = field(default_factory=list)  # tc: directions with our filter


class Attacher:
    """Attach/detach `mermin_ingress` and `mermin_egress` to interfaces of this netns."""

    def __init__(
        self,
        datapath: Datapath,
        mode: Literal["auto", "tcx", "tc"] = "auto",
        tcx_order: Literal["first", "last"] = "first",
        tc_priority: int = 1,
        *,
        pin_dir: Path | None = None,
    ) -> None:
        if mode not in ("auto", "tcx", "tc"):
            raise DatapathError(f"attach mode must be auto, tcx or tc, not {mode!r}")
        if not 1 <= tc_priority <= 32767:
            raise DatapathError(f"tc_priority must be within 1..32767, not {tc_priority}")
        self._prog = {d: datapath.program_fd(f"mermin_{d}") for d in DIRECTIONS}
        self.method = (
            mode if mode != "auto" else ("tcx" if probe_tcx(self._prog["ingress"]) else "tc")
        )
        self.tcx_order = tcx_order
        self.tc_priority = tc_priority
        root = pin_dir or (datapath.pin_root if datapath.settings.pin else None)
        self._links_dir = root / "links" if root else None
        self._qdisc_dir = root / "qdiscs" if root else None
        self._created_qdiscs: set[int] = set()  # without a pin dir: this process only
        self._att: dict[int, _Attachment] = {}
        self._lock = threading.RLock()
        self._ipr: IPRoute | None = None
        self.stats = AttachStats()

    # -- public API ---------------------------------------------------------------------------
    @property
    def attached(self) -> dict[int, str]:
        """ifindex -> name of every interface both programs are attached to."""
        with self._lock:
            return {i: a.ifname for i, a in self._att.items()}

    def attach(self, ifindex: int, ifname: str) -> None:
        """Attach both directions (idempotent). On failure nothing is left attached."""
        with self._lock:
            if ifindex in self._att:
                return
            att = _Attachment(ifname)
            try:
                for direction in DIRECTIONS:
                    if self.method == "tcx":
                        self._tcx_attach(ifindex, att, direction)
                    else:
                        self._tc_attach(ifindex, att, direction)
            except BaseException:
                self.stats.failures += 1
                self._undo(ifindex, att)
                raise
            self._att[ifindex] = att
            self.stats.attached += 1
            log.info("attached to %s (ifindex %d) with %s", ifname, ifindex, self.method)

    def detach(self, ifindex: int) -> None:
        """Detach both directions; a no-op for unknown or vanished interfaces."""
        with self._lock:
            att = self._att.pop(ifindex, None)
            if att is None:
                return
            self._undo(ifindex, att)
            self.stats.detached += 1
            log.info("detached from %s (ifindex %d)", att.ifname, ifindex)

    def detach_all(self) -> None:
        with self._lock:
            for ifindex in list(self._att):
                try:
                    self.detach(ifindex)
                except DatapathError as exc:  # keep going: detach everything we can
                    log.warning("detaching ifindex %d: %s", ifindex, exc)
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None

    def cleanup_orphans(self, ifindexes: set[int] | None = None) -> int:
        """Remove Mermin hooks this attacher does not own: pinned TCX links in our pin directory
        and cls_bpf filters named `mermin*` (on `ifindexes`, default every interface).
        Returns how many hooks were removed."""
        with self._lock:
            removed = self._cleanup_tcx_pins(ifindexes) + self._cleanup_tc(ifindexes)
            self.stats.orphans_removed += removed
            if removed:
                log.info("removed %d orphaned hook(s) of a previous agent", removed)
            return removed

    def close(self) -> None:
        self.detach_all()

    # -- TCX ----------------------------------------------------------------------------------
    def _pin_path(self, ifname: str, direction: str) -> Path | None:
        return self._links_dir / f"{ifname}_{direction}" if self._links_dir else None

    def _tcx_attach(self, ifindex: int, att: _Attachment, direction: str) -> None:
        prog_fd = self._prog[direction]
        pin = self._pin_path(att.ifname, direction)
        if pin is not None and pin.exists():
            fd = self._adopt(pin, ifindex, direction, prog_fd)
            if fd is not None:
                att.links[direction] = (fd, pin)
                return
        flags = libbpf.BPF_F_BEFORE if self.tcx_order == "first" else libbpf.BPF_F_AFTER
        try:
            fd = libbpf.link_create(prog_fd, ifindex, _TCX_TYPE[direction], flags)
        except DatapathError as exc:  # keep the type (PermissionDeniedError stays one)
            raise type(exc)(f"attaching TCX {direction} to {att.ifname}: {exc}") from exc
        att.links[direction] = (fd, None)
        if pin is not None:
            pin.parent.mkdir(parents=True, exist_ok=True)
            libbpf.obj_pin(fd, pin)
            att.links[direction] = (fd, pin)

    def _adopt(self, pin: Path, ifindex: int, direction: str, prog_fd: int) -> int | None:
        """Take over a pinned link of a previous agent on the same interface (new program)."""
        try:
            fd = libbpf.obj_get(pin)
            info = libbpf.link_info(fd)
        except (OSError, DatapathError):
            with contextlib.suppress(OSError):
                pin.unlink()
            return None
        if info.ifindex == ifindex and info.attach_type == _TCX_TYPE[direction]:
            try:
                libbpf.link_update(fd, prog_fd)
                self.stats.adopted += 1
                return fd
            except DatapathError as exc:
                log.warning("cannot update pinned link %s (%s): replacing it", pin, exc)
        libbpf.link_detach(fd)  # same name, another (or no) interface: stale
        libbpf.close_fd(fd)
        with contextlib.suppress(OSError):
            pin.unlink()
        return None

    def _cleanup_tcx_pins(self, ifindexes: set[int] | None) -> int:
        if self._links_dir is None or not self._links_dir.is_dir():
            return 0
        ours = {pin for a in self._att.values() for _, pin in a.links.values() if pin}
        removed = 0
        for pin in sorted(self._links_dir.iterdir()):
            if pin in ours:
                continue
            try:
                fd = libbpf.obj_get(pin)
            except (OSError, DatapathError):
                continue
            try:
                info = libbpf.link_info(fd)
                if ifindexes is not None and info.ifindex not in ifindexes and info.ifindex:
                    continue
                libbpf.link_detach(fd)
            finally:
                libbpf.close_fd(fd)
            with contextlib.suppress(FileNotFoundError):
                pin.unlink()
            removed += 1
        return removed

    # -- TC (clsact + cls_bpf) ----------------------------------------------------------------
    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    def _tc_attach(self, ifindex: int, att: _Attachment, direction: str) -> None:
        self._ensure_clsact(ifindex, att.ifname)
        parent = _TC_PARENT[direction]
        for flt in self._bpf_filters(ifindex, parent):
            if flt[0] == self.tc_priority and not flt[2].startswith(_NAME_PREFIX):
                raise DatapathError(
                    f"tc {direction} priority {self.tc_priority} on {att.ifname} is used by "
                    f"another program ({flt[2] or 'unnamed'}): choose another tc_priority"
                )
        try:
            self.ipr.tc(
                "replace-filter", "bpf", ifindex, f":{_TC_HANDLE}",
                fd=self._prog[direction], name=f"mermin_{direction}", parent=parent,
                prio=self.tc_priority, classid=1, direct_action=True,
            )  # fmt: skip
        except NetlinkError as exc:
            raise _tc_error(f"attaching tc {direction} filter to {att.ifname}", exc) from exc
        att.filters.append(direction)

    def _ensure_clsact(self, ifindex: int, ifname: str) -> None:
        try:
            self.ipr.tc("add", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return  # someone's (maybe ours from before): not ours to remove
            raise _tc_error(f"adding clsact qdisc to {ifname}", exc) from exc
        if self._qdisc_dir is not None:
            with contextlib.suppress(OSError):
                (self._qdisc_dir / str(ifindex)).mkdir(parents=True, exist_ok=True)
        else:
            self._created_qdiscs.add(ifindex)

    def _bpf_filters(self, ifindex: int, parent: int) -> list[tuple[int, int, str]]:
        """(priority, handle, name) of the cls_bpf filters at `parent` of an interface."""
        try:
            msgs = self.ipr.get_filters(ifindex, parent=parent)
        except NetlinkError as exc:
            if exc.code in (*_GONE, errno.EINVAL):
                return []
            raise _tc_error(f"listing tc filters of ifindex {ifindex}", exc) from exc
        out = []
        for msg in msgs:
            if msg.get_attr("TCA_KIND") != "bpf" or not msg["handle"]:
                continue
            opts = msg.get_attr("TCA_OPTIONS")
            name = (opts.get_attr("TCA_BPF_NAME") if opts else None) or ""
            out.append((msg["info"] >> 16, msg["handle"], name))
        return out

    def _tc_detach(self, ifindex: int, direction: str, prio: int, handle: int) -> None:
        try:
            self.ipr.tc(
                "del-filter", "bpf", ifindex, handle, parent=_TC_PARENT[direction], prio=prio
            )
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise _tc_error(
                    f"removing tc {direction} filter of ifindex {ifindex}", exc
                ) from exc

    def _maybe_remove_clsact(self, ifindex: int) -> None:
        marker = self._qdisc_dir / str(ifindex) if self._qdisc_dir else None
        ours = marker.exists() if marker else ifindex in self._created_qdiscs
        if not ours:
            return
        if any(self._all_filters(ifindex, _TC_PARENT[d]) for d in DIRECTIONS):
            return  # someone else put filters on it since: leave it
        try:
            self.ipr.tc("del", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code not in (*_GONE, errno.EINVAL):
                raise _tc_error(f"removing clsact qdisc of ifindex {ifindex}", exc) from exc
        if marker:
            with contextlib.suppress(OSError):
                marker.rmdir()
        self._created_qdiscs.discard(ifindex)

    def _all_filters(self, ifindex: int, parent: int) -> list:
        try:
            return [m for m in self.ipr.get_filters(ifindex, parent=parent) if m["handle"]]
        except NetlinkError:
            return []

    def _cleanup_tc(self, ifindexes: set[int] | None) -> int:
        if ifindexes is None:
            ifindexes = {link["index"] for link in self.ipr.get_links()}
            self._drop_stale_qdisc_markers(ifindexes)
        removed = 0
        for ifindex in sorted(ifindexes - set(self._att)):
            for direction in DIRECTIONS:
                for prio, handle, name in self._bpf_filters(ifindex, _TC_PARENT[direction]):
                    if name.startswith(_NAME_PREFIX):
                        self._tc_detach(ifindex, direction, prio, handle)
                        removed += 1
            self._maybe_remove_clsact(ifindex)
        return removed

    def _drop_stale_qdisc_markers(self, existing: set[int]) -> None:
        """Markers of interfaces that are gone (their qdisc went with them)."""
        if self._qdisc_dir is None or not self._qdisc_dir.is_dir():
            return
        for marker in self._qdisc_dir.iterdir():
            if marker.name.isdigit() and int(marker.name) not in existing:
                with contextlib.suppress(OSError):
                    marker.rmdir()

    # -- both ---------------------------------------------------------------------------------
    def _undo(self, ifindex: int, att: _Attachment) -> None:
        """Remove whatever `att` holds; interfaces that vanished are not an error."""
        errors = []
        for _direction, (fd, pin) in list(att.links.items()):
            try:
                libbpf.link_detach(fd)
            except DatapathError as exc:
                errors.append(str(exc))
            libbpf.close_fd(fd)
            if pin is not None:
                with contextlib.suppress(FileNotFoundError):
                    pin.unlink()
        att.links.clear()
        for direction in list(att.filters):
            try:
                self._tc_detach(ifindex, direction, self.tc_priority, _TC_HANDLE)
            except DatapathError as exc:
                errors.append(str(exc))
        if att.filters or self.method == "tc":
            try:
                self._maybe_remove_clsact(ifindex)
            except DatapathError as exc:
                errors.append(str(exc))
        att.filters.clear()
        if errors:
            raise DatapathError(f"detaching from {att.ifname}: {'; '.join(errors)}")


def _tc_error(what: str, exc: NetlinkError) -> DatapathError:
    if exc.code in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError(f"{what}: permission denied; grant CAP_NET_ADMIN")
    return DatapathError(f"{what} failed: {os.strerror(exc.code)}")
