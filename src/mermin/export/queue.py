"""A bounded queue of reports that drops the oldest when full and hands out batches."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchQueue"]

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """Producer side: `put(items) -> dropped` never blocks. Consumer side: `get_batch()` waits
    until `max_batch` items are queued, the oldest queued item has waited `interval` seconds,
    a flush was requested, or the queue was closed.

    When a put overflows `capacity`, the oldest items are discarded (the freshest reports are
    the most useful during an outage) and their number is returned to the caller to count.
    """

    def __init__(
        self,
        capacity: int,
        max_batch: int,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.max_batch = max_batch
        self.interval = interval
        self._clock = clock
        self._items: deque[T] = deque(maxlen=capacity)
        self._cond = threading.Condition(threading.Lock())
        self._since: float | None = None  # when the oldest waiting item arrived
        self._flush = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, items: Sequence[T]) -> int:
        """Queue `items`; returns how many old (or, past capacity, new) items were dropped."""
        n = len(items)
        if not n:
            return 0
        with self._cond:
            before = len(self._items)
            self._items.extend(items)  # deque(maxlen) discards from the left: the oldest
            dropped = max(0, before + n - self.capacity)
            if before == 0:
                self._since = self._clock()
                self._cond.notify()
            elif before < self.max_batch <= len(self._items):
                self._cond.notify()
            return dropped

    def get_batch(self, timeout: float | None = None) -> list[T] | None:
        """The next batch (possibly empty when `timeout` passed first); None once closed and
        empty."""
        end = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                items = self._items
                now = self._clock()
                if items:
                    due = self._since is None or now - self._since >= self.interval
                    if len(items) >= self.max_batch or due or self._flush or self._closed:
                        return self._take()
                    wait = self.interval - (now - self._since) if self._since else self.interval
                else:
                    self._flush = False
                    if self._closed:
                        return None
                    wait = None
                if end is not None:
                    left = end - now
                    if left <= 0:
                        return []
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def _take(self) -> list[T]:
        items = self._items
        n = min(len(items), self.max_batch)
        if n == len(items):  # everything: one C-level copy
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(n)]
        if not items:
            self._since = None
            self._flush = False
        return batch

    def flush(self) -> None:
        """Make everything queued now due at once."""
        with self._cond:
            self._flush = True
            self._cond.notify_all()

    def close(self) -> None:
        """No more waiting for a full batch; `get_batch` returns None once empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drain(self) -> list[T]:
        """Remove and return everything still queued."""
        with self._cond:
            out = list(self._items)
            self._items.clear()
            self._since = None
            return out
