"""Clocks of the flow table: the kernel's time base and its offset to wall time.

Live, the kernel stamps flows with CLOCK_BOOTTIME (`bpf_ktime_get_boot_ns`); reports carry wall
clock times, so the table adds `wall_offset_ns()` (CLOCK_REALTIME - CLOCK_BOOTTIME, re-read each
poll so clock steps are followed). In replay the capture's timestamps are both. Tests inject a
`ManualClock` and never sleep.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["BootClock", "Clock", "ManualClock"]


class Clock(Protocol):
    """Time source of the flow table, in the kernel map's time base."""

    def now_ns(self) -> int:
        """Current time in the map's time base."""
        ...

    def wall_offset_ns(self) -> int:
        """Add to a map timestamp to get Unix wall-clock nanoseconds."""
        ...


class BootClock:
    """Live clock: CLOCK_BOOTTIME, as `bpf_ktime_get_boot_ns()` reads it."""

    def now_ns(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def wall_offset_ns(self) -> int:
        # Bracket the realtime read between two boottime reads and take the midpoint, so the
        # offset is accurate to well under a microsecond.
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        wall = time.time_ns()
        after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        return wall - (before + after) // 2


class ManualClock:
    """A clock that only moves when told to (tests, replay). Wall offset defaults to 0."""

    def __init__(self, now_ns: int = 0, wall_offset_ns: int = 0) -> None:
        self._now = now_ns
        self._offset = wall_offset_ns

    def now_ns(self) -> int:
        return self._now

    def wall_offset_ns(self) -> int:
        return self._offset

    def set(self, now_ns: int) -> None:
        """Jump to `now_ns` (never backwards)."""
        self._now = max(self._now, now_ns)

    def advance(self, seconds: float) -> int:
        """Move forward by `seconds` and return the new time."""
        self._now += int(seconds * 1e9)
        return self._now
