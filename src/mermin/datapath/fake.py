"""`FakeFlowMap`: the FlowMap API over numpy arrays, for tests that need no kernel.

Entries are stored as raw bytes of the ABI dtypes (byte-for-byte what the kernel map holds),
so code under test decodes exactly what it would decode from the real map. `key()` builds a
normalized flow key the way the kernel program does (side "a" is the endpoint with the lower
(address bytes, port)), and `value()` a zeroed value with a few fields set.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from .abi import KEY_DTYPE, VALUE_DTYPE
from .flowmap import FlowMapStats

__all__ = ["FakeFlowMap", "key", "value"]


def _addr16(addr: str) -> tuple[bytes, int]:
    ip = ipaddress.ip_address(addr)
    return ip.packed.ljust(16, b"\0"), ip.version


def key(src: str, dst: str, sport: int, dport: int, protocol: int) -> tuple[np.ndarray, int]:
    """A normalized flow key for a packet src:sport -> dst:dport: `(key scalar, side of src)`.

    The side is 0 when src became side "a", 1 when it became "b" (so the packet counts in
    `dir[side]`).
    """
    a, version = _addr16(src)
    b, version_b = _addr16(dst)
    if version != version_b:
        raise ValueError(f"mixed address families: {src} and {dst}")
    side = 0
    if (b, dport) < (a, sport):
        a, b, sport, dport, side = b, a, dport, sport, 1
    k = np.zeros(1, KEY_DTYPE)
    k["addr_a"][0] = np.frombuffer(a, np.uint8)
    k["addr_b"][0] = np.frombuffer(b, np.uint8)
    k["port_a"], k["port_b"] = sport, dport
    k["ip_version"], k["protocol"] = version, protocol
    return k[0], side


def value(**fields: object) -> np.ndarray:
    """A VALUE_DTYPE scalar with top-level `fields` set (e.g. first_seen_ns=1, ifindex=3)."""
    v = np.zeros(1, VALUE_DTYPE)
    for name, val in fields.items():
        v[name] = val
    return v[0]


class FakeFlowMap:
    """In-memory stand-in for `FlowMap` (same methods, same dtypes, same stats)."""

    def __init__(self, capacity: int = 16384) -> None:
        self._capacity = capacity
        self._entries: dict[bytes, bytes] = {}  # key bytes -> value bytes, insertion ordered
        self.stats = FlowMapStats()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    # -- test-side mutation (what the kernel does) --------------------------------------------
    def put(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Insert or replace entries (arrays or scalars of KEY_DTYPE / VALUE_DTYPE)."""
        keys = np.atleast_1d(np.asarray(keys, KEY_DTYPE))
        values = np.atleast_1d(np.asarray(values, VALUE_DTYPE))
        if len(keys) != len(values):
            raise ValueError("keys and values differ in length")
        for k, v in zip(keys, values, strict=True):
            kb = k.tobytes()
            if kb not in self._entries and len(self._entries) >= self._capacity:
                raise OverflowError("FakeFlowMap is full (the kernel would count MAP_FULL)")
            self._entries[kb] = v.tobytes()

    def get(self, k: np.ndarray) -> np.ndarray | None:
        """The value of one key (a VALUE_DTYPE scalar copy) or None."""
        raw = self._entries.get(np.asarray(k, KEY_DTYPE).tobytes())
        return None if raw is None else np.frombuffer(raw, VALUE_DTYPE)[0].copy()

    lookup = get

    # -- FlowMap API --------------------------------------------------------------------------
    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        self.stats.reads += 1
        self.stats.batch_calls += 1
        n = len(self._entries)
        self.stats.entries_read += n
        keys = np.frombuffer(bytearray(b"".join(self._entries.keys())), KEY_DTYPE, count=n)
        values = np.frombuffer(bytearray(b"".join(self._entries.values())), VALUE_DTYPE, count=n)
        return keys, values

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.atleast_1d(np.asarray(keys, KEY_DTYPE))
        values = np.zeros(len(keys), VALUE_DTYPE)
        found = np.zeros(len(keys), bool)
        raw_values = values.view(np.uint8).reshape(len(keys), VALUE_DTYPE.itemsize)
        for i, k in enumerate(keys):
            raw = self._entries.pop(k.tobytes(), None)
            if raw is not None:
                raw_values[i] = np.frombuffer(raw, np.uint8)  # byte-exact, padding included
                found[i] = True
        n = int(found.sum())
        self.stats.taken += n
        self.stats.take_missing += len(keys) - n
        return values, found

    def delete(self, keys: np.ndarray) -> int:
        keys = np.atleast_1d(np.asarray(keys, KEY_DTYPE))
        deleted = sum(self._entries.pop(k.tobytes(), None) is not None for k in keys)
        self.stats.deleted += deleted
        self.stats.delete_missing += len(keys) - deleted
        return deleted
