"""Reading and draining the kernel FLOWS map in batches.

`read_all()` copies every entry with BPF_MAP_LOOKUP_BATCH straight into preallocated numpy
buffers of the ABI dtypes: one syscall per `batch_size` entries, no Python per entry.

Ending flows is two-phase (collect keys with `read_all()`, decide in the flow table, then
`take(keys)`): `take` is an atomic lookup-and-delete per key, so packets that arrived after the
read are in the value it returns and are never lost between the last read and the delete.
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass

import numpy as np

from . import libbpf
from .abi import KEY_DTYPE, VALUE_DTYPE

__all__ = ["FlowMap", "FlowMapStats"]


@dataclass(slots=True)
class FlowMapStats:
    """Totals since creation (the telemetry layer turns them into metrics)."""

    reads: int = 0  # read_all() calls
    batch_calls: int = 0  # BPF_MAP_LOOKUP_BATCH syscalls
    entries_read: int = 0
    taken: int = 0  # entries removed by take()
    take_missing: int = 0  # keys take() did not find (already gone)
    deleted: int = 0
    delete_missing: int = 0
    resizes: int = 0  # buffer or batch growths


class FlowMap:
    """The FLOWS hash map (flow_key -> flow_value) behind a file descriptor."""

    def __init__(self, fd: int, capacity: int, *, batch_size: int = 4096) -> None:
        self.fd = fd
        self._capacity = capacity
        self.batch_size = max(64, min(batch_size, capacity))
        self.stats = FlowMapStats()
        # Room for the whole map plus one batch: entries can be deleted and re-added while we
        # iterate, so one pass may return a few more than `capacity` (then we grow).
        self._keys = np.zeros(capacity + self.batch_size, KEY_DTYPE)
        self._values = np.zeros(capacity + self.batch_size, VALUE_DTYPE)
        self._token = np.zeros(2, np.uint64)  # resume token (htab: a bucket index)
        self._lock = threading.Lock()  # the read buffers are shared between calls

    @property
    def capacity(self) -> int:
        """max_entries of the map."""
        return self._capacity

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        """All entries as `(keys[KEY_DTYPE], values[VALUE_DTYPE])` (fresh arrays, same length)."""
        with self._lock:
            return self._read_all()

    def _read_all(self) -> tuple[np.ndarray, np.ndarray]:
        self.stats.reads += 1
        total, first = 0, True
        while True:
            if len(self._keys) - total < self.batch_size:
                self._grow(2 * len(self._keys))
            try:
                n, done = libbpf.map_lookup_batch(
                    self.fd,
                    None if first else self._token,
                    self._token,
                    self._keys.ctypes.data + total * KEY_DTYPE.itemsize,
                    self._values.ctypes.data + total * VALUE_DTYPE.itemsize,
                    self.batch_size,
                )
            except libbpf.BatchTooSmallError:
                self.batch_size *= 2  # one hash bucket holds more than a batch
                self.stats.resizes += 1
                continue
            self.stats.batch_calls += 1
            total += n
            first = False
            if done:
                break
        self.stats.entries_read += total
        return _raw_copy(self._keys[:total]), _raw_copy(self._values[:total])

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Atomically look up and delete each key: `(final values, found mask)`.

        Values of keys that were not found are zero.
        """
        keys = np.ascontiguousarray(keys, KEY_DTYPE)
        values = np.zeros(len(keys), VALUE_DTYPE)
        found = np.zeros(len(keys), bool)
        call = libbpf.lib().bpf_map_lookup_and_delete_elem
        kbase, vbase = keys.ctypes.data, values.ctypes.data
        ks, vs = KEY_DTYPE.itemsize, VALUE_DTYPE.itemsize
        for i in range(len(keys)):  # per flow, never per packet
            ret = call(self.fd, kbase + i * ks, vbase + i * vs)
            if ret == 0:
                found[i] = True
            elif ret != -errno.ENOENT:
                libbpf.check(ret, "map lookup-and-delete", "FLOWS")
        n = int(found.sum())
        self.stats.taken += n
        self.stats.take_missing += len(keys) - n
        return values, found

    def delete(self, keys: np.ndarray) -> int:
        """Delete keys with BPF_MAP_DELETE_BATCH; absent keys are skipped. Returns deleted count."""
        keys = np.ascontiguousarray(keys, KEY_DTYPE)
        start, deleted = 0, 0
        while start < len(keys):
            addr = keys.ctypes.data + start * KEY_DTYPE.itemsize
            n = libbpf.map_delete_batch(self.fd, addr, len(keys) - start)
            deleted += n
            start += n
            if start < len(keys):  # the kernel stopped at an absent key: skip it
                self.stats.delete_missing += 1
                start += 1
        self.stats.deleted += deleted
        return deleted

    def lookup(self, key: np.ndarray) -> np.ndarray | None:
        """One entry's value (a VALUE_DTYPE scalar array) or None."""
        key = np.ascontiguousarray(key, KEY_DTYPE).reshape(1)
        value = np.zeros(1, VALUE_DTYPE)
        ret = libbpf.lib().bpf_map_lookup_elem(self.fd, key.ctypes.data, value.ctypes.data)
        if ret == -errno.ENOENT:
            return None
        libbpf.check(ret, "map lookup", "FLOWS")
        return value[0]

    def _grow(self, size: int) -> None:
        self.stats.resizes += 1
        keys, values = np.zeros(size, KEY_DTYPE), np.zeros(size, VALUE_DTYPE)
        keys[: len(self._keys)] = self._keys
        values[: len(self._values)] = self._values
        self._keys, self._values = keys, values


def _raw_copy(arr: np.ndarray) -> np.ndarray:
    """A byte-exact copy (numpy's structured copy may drop padding bytes; a uint8 copy can't)."""
    return arr.view(np.uint8).copy().view(arr.dtype)
