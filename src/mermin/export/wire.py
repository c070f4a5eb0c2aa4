"""Protobuf wire-format primitives for the OTLP encoders: varints, length-delimited fields,
AnyValue/KeyValue, and prefix tables/caches for attributes whose key never changes."""

from __future__ import annotations

import struct
from typing import Any

__all__ = [
    "CACHE_LIMIT",
    "FIXED2",
    "Bounded",
    "IntKey",
    "StrKey",
    "attr",
    "encode_any_value",
    "encode_key_value",
    "ld",
    "varint",
]

_SMALL = [bytes((i,)) for i in range(128)]
_TWO = [bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(128, 1 << 14)]
CACHE_LIMIT = 16384  # entries per value cache; cleared (not evicted one by one) when full
FIXED2 = struct.Struct("<BQBQ").pack


def varint(v: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negative int64 as two's complement)."""
    if v < 0x4000:
        if v >= 0x80:
            return _TWO[v - 128]
        if v >= 0:
            return _SMALL[v]
        v += 1 << 64
    if v < 0x200000:
        return bytes(((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, v >> 14))
    if v < 0x10000000:
        return bytes(
            ((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, ((v >> 14) & 0x7F) | 0x80, v >> 21)
        )
    if v < 0x800000000:
        return bytes(
            ((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, ((v >> 14) & 0x7F) | 0x80,
             ((v >> 21) & 0x7F) | 0x80, v >> 28)
        )  # fmt: skip
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def ld(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, varint length, payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def encode_any_value(value: Any) -> bytes:
    """AnyValue for a string, int (bool as bool), float, bytes or list of those."""
    if isinstance(value, str):
        return ld(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return ld(0x3A, value)
    if isinstance(value, list | tuple):
        return ld(0x2A, b"".join(ld(0x0A, encode_any_value(x)) for x in value))
    raise TypeError(f"unsupported attribute value type {type(value).__name__}")


def encode_key_value(key: str, value: Any) -> bytes:
    """A KeyValue message (without the enclosing field tag)."""
    return ld(0x0A, key.encode()) + ld(0x12, encode_any_value(value))


def attr(key: str, value: Any) -> bytes:
    """A KeyValue as field 9 (attributes) of a Span, tag included."""
    return ld(0x4A, encode_key_value(key, value))


class IntKey:
    """Finished prefixes of an int attribute, one per varint length (1..10)."""

    __slots__ = ("prefixes",)

    def __init__(self, key: str) -> None:
        kb = ld(0x0A, key.encode())
        self.prefixes = [b""] + [
            b"\x4a" + varint(len(kb) + 3 + n) + kb + b"\x12" + bytes((1 + n,)) + b"\x18"
            for n in range(1, 11)
        ]

    def __call__(self, v: int) -> bytes:
        vb = varint(v)
        return self.prefixes[len(vb)] + vb


class StrKey:
    """A string attribute with a bounded cache of finished encodings per value."""

    __slots__ = ("cache", "key", "limit", "prefixes")

    def __init__(self, key: str, limit: int = CACHE_LIMIT) -> None:
        self.key = key
        self.cache: dict[str, bytes] = {}
        self.limit = limit
        kb = ld(0x0A, key.encode())
        # prefixes[n]: everything before a value of n bytes, while every length fits one byte
        self.prefixes = [
            bytes((0x4A, len(kb) + 4 + n)) + kb + bytes((0x12, n + 2, 0x0A, n))
            for n in range(max(0, 124 - len(kb)))
        ]

    def __call__(self, v: str) -> bytes:
        c = self.cache.get(v)
        if c is None:
            vb = v.encode()
            c = self.prefixes[len(vb)] + vb if len(vb) < len(self.prefixes) else attr(self.key, v)
            if self.limit:
                if len(self.cache) >= self.limit:
                    self.cache.clear()
                self.cache[v] = c
        return c


class Bounded(dict):  # type: ignore[type-arg]
    """A dict used as a cache: cleared whole when it reaches its limit (cheap, bounded)."""

    __slots__ = ("limit",)

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: bytes) -> bytes:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
