"""The flow table: turns the kernel's per-flow counters into flow reports.

Each `poll(now)`:

1. reads the whole FLOWS map in one batch (`FlowMap.read_all`);
2. maps each key to a userspace slot (a dict keyed by the key's bytes) holding the totals of the
   flow's previous report, its last report time and, once reported, its identity (trace id,
   Community ID, initiator side, span kind);
3. decides per flow, vectorised over the whole batch: idle for its timeout (TCP: `tcp_timeout`,
   `tcp_fin_timeout` once FIN went both ways, `tcp_rst_timeout` after a RST) -> final report;
   active and `max_record_interval` since its last report -> periodic report;
4. removes ended flows with `FlowMap.take` (atomic lookup-and-delete) and builds their final
   report from the value the delete returned, so packets that arrived after step 1 are counted;
5. skips reports whose counters did not change since the previous report of the flow.

`flush()` ends every flow (shutdown, end of a replay): `forced_end`, except TCP connections
that already closed on the wire, which keep `end_of_flow`.

When the map fills past `map_high_water`, the least recently active flows are ended early with
`lack_of_resources` down to `map_low_water`. A rising kernel MAP_FULL counter (packets of new
flows the kernel could not record) is kept in `stats.map_full` and logged.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from typing import Protocol

import numpy as np

from mermin.config.span import SpanConfig
from mermin.flows.assemble import ReportBuilder
from mermin.flows.clock import Clock
from mermin.flows.decode import end_of_flow, key_ids, timeouts_ns, totals
from mermin.flows.direction import DirectionResolver
from mermin.flows.listening import NodeSocketWatcher
from mermin.flows.record import EndReason, FlowReport

__all__ = ["FlowMapLike", "FlowTable", "FlowTableStats"]

log = logging.getLogger(__name__)

_MAP_FULL_LOG_INTERVAL = 60.0


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC during a poll: it allocates ~60 objects per report, and every
    few hundred allocations would trigger a GC pass over the growing batch. Reports hold no
    cycles; reference counting frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class FlowMapLike(Protocol):
    """What the table needs from `mermin.datapath.flowmap.FlowMap` (and its fake)."""

    capacity: int

    def read_all(self) -> tuple[np.ndarray, np.ndarray]: ...

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class FlowTableStats:
    """Counters of the flow table (cumulative unless noted)."""

    polls: int = 0
    flows_active: int = 0  # gauge: flows tracked after the last poll
    flows_created: int = 0
    flows_ended: int = 0
    reports: int = 0
    reports_by_reason: dict[str, int] = field(default_factory=dict)
    unchanged_skipped: int = 0  # due reports not sent because nothing changed
    vanished: int = 0  # entries that left the map without the table deleting them
    take_missing: int = 0  # ended entries already gone at delete time (their last read is used)
    evicted: int = 0  # flows ended early with lack_of_resources
    map_full: int = 0  # kernel MAP_FULL counter: packets of flows that could not be recorded
    map_entries: int = 0  # gauge: entries in the kernel map at the last poll
    last_poll_seconds: float = 0.0


class FlowTable:
    """Userspace state of every flow in the kernel map; see the module docstring."""

    def __init__(
        self,
        flow_map: FlowMapLike,
        span_config: SpanConfig | None = None,
        clock: Clock | None = None,
        *,
        direction: DirectionResolver | None = None,
        counters: Callable[[], Mapping[str, int]] | None = None,
        ifname: Callable[[int], str | None] | None = None,
        capacity: int | None = None,
        metrics: bool = True,
    ) -> None:
        """`clock` None means live (CLOCK_BOOTTIME); a live table without an explicit
        `direction` starts a `NodeSocketWatcher` thread (stopped by `close()`) so listening
        sockets and local addresses of the node inform direction and span kind. `counters`
        reads the kernel counters (MAP_FULL); `ifname` maps an ifindex to its name; `metrics`
        updates the Prometheus flow metrics once per poll."""
        from mermin.flows.clock import BootClock

        self._watcher: NodeSocketWatcher | None = None
        if direction is None and clock is None:
            # live: know the node's listening sockets and addresses (host + every pod netns)
            self._watcher = NodeSocketWatcher()
            self._watcher.start()
            watcher = self._watcher
            direction = DirectionResolver(lambda: watcher.current, refresh=watcher.refresh)
        self._map = flow_map
        self._cfg = span_config or SpanConfig()
        self._clock = clock or BootClock()
        self._counters = counters
        self._capacity = capacity if capacity is not None else int(getattr(flow_map, "capacity", 0))
        self._builder = ReportBuilder(direction or DirectionResolver(), self._cfg, ifname)
        self._metrics = metrics
        self.stats = FlowTableStats()
        self._slot_of: dict[bytes, int] = {}
        self._free: list[int] = []
        self._size = 0
        self._grow(1024)
        self._map_full_logged = 0.0
        self._created_counted = 0

    # --- userspace state -------------------------------------------------------------------

    def _grow(self, size: int) -> None:
        old = self._size
        self._size = size

        def extend(arr: np.ndarray | None, dtype: type, shape: tuple[int, ...] = ()) -> np.ndarray:
            new = np.zeros((size, *shape), dtype=dtype)
            if arr is not None:
                new[:old] = arr
            return new

        self._rep = extend(getattr(self, "_rep", None), np.int64, (4,))  # last reported totals
        self._last_report = extend(getattr(self, "_last_report", None), np.int64)
        self._ids: list[bytes | None] = getattr(self, "_ids", []) + [None] * (size - old)
        self._free.extend(range(size - 1, old - 1, -1))
        self._builder.grow(size)

    def _slots(self, ids: list[bytes], first_seen: np.ndarray) -> np.ndarray:
        """Slot of each key, allocating fresh slots for keys not seen before."""
        slots = np.fromiter(map(self._slot_of.get, ids, repeat(-1)), dtype=np.int64,
                            count=len(ids))  # fmt: skip
        new = np.flatnonzero(slots < 0)
        if len(new):
            if len(new) > len(self._free):
                self._grow(max(self._size * 2, self._size + len(new) - len(self._free) + 1024))
            fresh = np.array(self._free[-len(new) :][::-1], dtype=np.int64)
            del self._free[-len(new) :]
            slots[new] = fresh
            for i, slot in zip(new.tolist(), fresh.tolist(), strict=False):
                self._slot_of[ids[i]] = slot
                self._ids[slot] = ids[i]
            self._rep[fresh] = 0
            self._last_report[fresh] = first_seen[new]
            self._builder.reset(fresh)
            self.stats.flows_created += len(new)
        return slots

    def _release(self, slots: np.ndarray) -> None:
        for slot in slots.tolist():
            key = self._ids[slot]
            if key is not None:
                self._slot_of.pop(key, None)
                self._ids[slot] = None
                self._free.append(slot)
        self._builder.reset(slots)

    def _drop_vanished(self, slots: np.ndarray) -> None:
        """Forget flows whose entry left the map without us (another agent, a map reset)."""
        if len(self._slot_of) == len(slots):
            return
        alive = np.zeros(self._size, dtype=bool)
        alive[slots] = True
        gone = [s for s in self._slot_of.values() if not alive[s]]
        if gone:
            self.stats.vanished += len(gone)
            self._release(np.array(gone, dtype=np.int64))

    # --- public API -------------------------------------------------------------------------

    @property
    def config(self) -> SpanConfig:
        return self._cfg

    def __len__(self) -> int:
        return len(self._slot_of)

    def close(self) -> None:
        """Stop the background socket scan (live tables only); the table stays usable."""
        if self._watcher is not None:
            self._watcher.stop()

    def reconfigure(self, span_config: SpanConfig) -> None:
        """Apply new timeouts and seed; known flows keep their identity (trace id, ID)."""
        self._cfg = span_config
        self._builder.reconfigure(span_config)

    def poll(self, now_ns: int | None = None) -> list[FlowReport]:
        """Read the map once and return the reports that are due at `now_ns` (map time base)."""
        with _no_gc():
            return self._poll(now_ns)

    def flush(self, reason: str = EndReason.FORCED_END) -> list[FlowReport]:
        """End every flow now (shutdown, end of a replay): take all entries, final reports."""
        with _no_gc():
            return self._flush(reason)

    def _poll(self, now_ns: int | None) -> list[FlowReport]:
        began = time.perf_counter()
        now = self._clock.now_ns() if now_ns is None else int(now_ns)
        offset = self._clock.wall_offset_ns()
        keys, values, ids = self._read()
        n = len(keys)
        self.stats.polls += 1
        self.stats.map_entries = n
        self._check_map_full()
        slots = self._slots(ids, values["first_seen_ns"].astype(np.int64))
        self._drop_vanished(slots)
        reports: list[FlowReport] = []
        if n:
            cur = totals(values)
            changed = (cur != self._rep[slots]).any(axis=1)
            last_seen = values["last_seen_ns"].astype(np.int64)
            ended = (now - last_seen) >= timeouts_ns(keys, values, self._cfg)
            evict = self._pick_evictions(n, ended, last_seen)
            gone = ended | evict
            interval = int(self._cfg.max_record_interval * 1e9)
            due = ~gone & changed & ((now - self._last_report[slots]) >= interval)
            self.stats.unchanged_skipped += int(
                np.count_nonzero(~gone & ~changed & ((now - self._last_report[slots]) >= interval))
            )
            if gone.any():
                reports += self._finish(keys, values, slots, np.flatnonzero(gone), evict, offset)
            if due.any():
                rows = np.flatnonzero(due)
                reports += self._report(
                    keys[rows], values[rows], slots[rows], cur[rows], EndReason.ACTIVE_TIMEOUT,
                    offset,
                )
                self._last_report[slots[rows]] = now
        self.stats.flows_active = len(self._slot_of)
        self.stats.last_poll_seconds = time.perf_counter() - began
        self._count(reports)
        return reports

    def _flush(self, reason: str) -> list[FlowReport]:
        offset = self._clock.wall_offset_ns()
        keys, values, ids = self._read()
        slots = self._slots(ids, values["first_seen_ns"].astype(np.int64))
        self._drop_vanished(slots)
        reports: list[FlowReport] = []
        if len(keys):
            rows = np.arange(len(keys))
            reports = self._finish(
                keys, values, slots, rows, np.zeros(len(keys), dtype=bool), offset, reason
            )
        self.stats.flows_active = len(self._slot_of)
        self._count(reports)
        return reports

    # --- steps ------------------------------------------------------------------------------

    def _read(self) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """One batch read of the map. A hash map iterated while entries come and go can
        return a key twice; the later copy (the fresher value) is kept."""
        keys, values = self._map.read_all()
        ids = key_ids(keys)
        if len(set(ids)) != len(ids):
            rows = np.array(sorted({k: i for i, k in enumerate(ids)}.values()), dtype=np.intp)
            keys, values = keys[rows], values[rows]
            ids = [ids[i] for i in rows.tolist()]
        return keys, values, ids

    def _pick_evictions(self, n: int, ended: np.ndarray, last_seen: np.ndarray) -> np.ndarray:
        """Mask of the least recently active flows to end when the map is too full."""
        evict = np.zeros(n, dtype=bool)
        cap = self._capacity
        if not cap or n <= self._cfg.map_high_water * cap:
            return evict
        excess = n - int(ended.sum()) - int(self._cfg.map_low_water * cap)
        if excess <= 0:
            return evict
        candidates = np.flatnonzero(~ended)
        excess = min(excess, len(candidates))
        oldest = candidates[np.argpartition(last_seen[candidates], excess - 1)[:excess]]
        evict[oldest] = True
        self.stats.evicted += excess
        log.warning(
            "flow map %d/%d entries (above %.0f%%): ending %d least recently active flows "
            "with lack_of_resources", n, cap, self._cfg.map_high_water * 100, excess,
        )
        return evict

    def _finish(
        self,
        keys: np.ndarray,
        values: np.ndarray,
        slots: np.ndarray,
        rows: np.ndarray,
        evict: np.ndarray,
        offset: int,
        forced: str | None = None,
    ) -> list[FlowReport]:
        """Delete `rows` from the kernel map atomically and build their final reports."""
        k = keys[rows]
        taken, found = self._map.take(k)
        vals = values[rows].copy()
        found = np.asarray(found, dtype=bool)
        vals[found] = taken[found]
        self.stats.take_missing += int(np.count_nonzero(~found))
        s = slots[rows]
        cur = totals(vals)
        changed = (cur != self._rep[s]).any(axis=1)
        self.stats.unchanged_skipped += int(np.count_nonzero(~changed))
        # a connection that already closed on the wire (FIN both ways, RST) ended by itself,
        # also when a flush or an eviction is what reports it
        otherwise = forced if forced is not None else EndReason.IDLE_TIMEOUT
        reasons = np.where(end_of_flow(k, vals), EndReason.END_OF_FLOW, otherwise)
        if forced is None:
            reasons = np.where(evict[rows] & (reasons != EndReason.END_OF_FLOW),
                               EndReason.LACK_OF_RESOURCES, reasons)  # fmt: skip
        reasons = reasons.astype(object)
        out: list[FlowReport] = []
        if changed.any():
            sel = np.flatnonzero(changed)
            out = self._report(k[sel], vals[sel], s[sel], cur[sel], reasons[sel].tolist(), offset)
        self.stats.flows_ended += len(rows)
        self._release(s)
        return out

    def _report(
        self,
        keys: np.ndarray,
        values: np.ndarray,
        slots: np.ndarray,
        cur: np.ndarray,
        reasons: str | list[str],
        offset: int,
    ) -> list[FlowReport]:
        reports = self._builder.build(keys, values, slots, cur, self._rep[slots], reasons, offset)
        self._rep[slots] = cur
        return reports

    def _check_map_full(self) -> None:
        if self._counters is None:
            return
        try:
            value = int(self._counters().get("map_full", 0))
        except Exception as exc:  # counters are informative; never fail a poll over them
            log.debug("kernel counters unavailable: %s", exc)
            return
        if value > self.stats.map_full:
            rise = value - self.stats.map_full
            now = time.monotonic()
            if now - self._map_full_logged >= _MAP_FULL_LOG_INTERVAL:
                self._map_full_logged = now
                log.warning(
                    "kernel flow map full: %d packets of new flows were not recorded (total "
                    "%d); raise the flow map capacity (pipeline.flow_capture.flow_stats_capacity)",
                    rise, value,
                )
        self.stats.map_full = value

    def _count(self, reports: list[FlowReport]) -> None:
        counts = Counter(r.end_reason for r in reports)
        by = self.stats.reports_by_reason
        for reason, n in counts.items():
            by[reason] = by.get(reason, 0) + n
        self.stats.reports += len(reports)
        if not self._metrics:
            return
        from mermin.telemetry import metrics

        created = self.stats.flows_created
        metrics.FLOW_SPANS_CREATED.inc(created - self._created_counted)
        self._created_counted = created
        metrics.FLOW_SPANS_ACTIVE.set(self.stats.flows_active)
        metrics.POLL_DURATION.observe(self.stats.last_poll_seconds)
        metrics.INTERFACE_PACKETS.inc(sum(r.packets_delta + r.rev_packets_delta for r in reports))
        metrics.INTERFACE_BYTES.inc(sum(r.bytes_delta + r.rev_bytes_delta for r in reports))
        for reason, n in counts.items():
            metrics.FLOW_REPORTS.labels(reason=reason).inc(n)
