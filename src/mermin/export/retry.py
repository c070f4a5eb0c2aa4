"""Which export failures are retried, and how long to wait (OTLP specification, "Retryable
response codes" / "OTLP/HTTP Throttling"): exponential backoff with jitter, or the server's
own hint when it sends one (gRPC `google.rpc.RetryInfo`, HTTP `Retry-After`)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime

from mermin.config.export import RetryConfig

__all__ = [
    "RETRYABLE_HTTP",
    "Backoff",
    "grpc_retry_delay",
    "parse_retry_after",
    "proto_fields",
]

RETRYABLE_HTTP = frozenset({429, 502, 503, 504})

_RETRY_INFO_URL = "type.googleapis.com/google.rpc.RetryInfo"
_MAX_HINT = 3600.0  # a hint further out than this is treated as garbage


class Backoff:
    """Delay before retry number `attempt` (0-based): initial * multiplier**attempt capped at
    max_backoff, +/- jitter; a server hint replaces the computed delay."""

    def __init__(self, config: RetryConfig, rand: Callable[[], float] = random.random) -> None:
        self.config = config
        self._rand = rand

    def delay(self, attempt: int, hint: float | None = None) -> float:
        if hint is not None:
            return min(max(hint, 0.0), _MAX_HINT)
        c = self.config
        base = min(c.max_backoff, c.initial_backoff * c.multiplier**attempt)
        return max(0.0, base * (1.0 + c.jitter * (2.0 * self._rand() - 1.0)))


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from an HTTP Retry-After header (delay-seconds or HTTP-date); None if absent
    or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _MAX_HINT)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - now()), _MAX_HINT)


# -- minimal protobuf reading for google.rpc.Status details (no googleapis dependency) -------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each varint or length-delimited field; skips fixed ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            yield number, buf[pos : pos + size]
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _retry_info_delay(status: bytes) -> float | None:
    """RetryInfo.retry_delay in seconds from a serialized google.rpc.Status, if present."""
    for number, detail in proto_fields(status):
        if number != 3 or not isinstance(detail, bytes):  # Status.details: repeated Any
            continue
        type_url, value = "", b""
        for n, v in proto_fields(detail):
            if n == 1 and isinstance(v, bytes):
                type_url = v.decode(errors="replace")
            elif n == 2 and isinstance(v, bytes):
                value = v
        if type_url != _RETRY_INFO_URL:
            continue
        seconds = nanos = 0
        for n, v in proto_fields(value):  # RetryInfo { 1: Duration retry_delay }
            if n == 1 and isinstance(v, bytes):
                for dn, dv in proto_fields(v):  # Duration { 1: int64 seconds, 2: int32 nanos }
                    if dn == 1 and isinstance(dv, int):
                        seconds = dv
                    elif dn == 2 and isinstance(dv, int):
                        nanos = dv
        return max(0.0, seconds + nanos / 1e9)
    return None


def grpc_retry_delay(trailing_metadata: object) -> float | None:
    """The RetryInfo delay carried in `grpc-status-details-bin`, or None."""
    try:
        for key, value in trailing_metadata or ():  # type: ignore[attr-defined]
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                return _retry_info_delay(value)
    except (TypeError, ValueError):
        return None
    return None
