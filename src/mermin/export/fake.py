"""A Transport for tests and benchmarks: records request bodies and answers as scripted."""

from __future__ import annotations

import threading
from collections.abc import Callable

from mermin.export.base import TransportError

__all__ = ["FakeTransport"]


class FakeTransport:
    """`respond(body, timeout) -> rejected` decides each answer (raise TransportError to fail;
    block to simulate a hung receiver: `cancel()` releases blocked calls)."""

    content_type = "application/x-protobuf"

    def __init__(self, respond: Callable[[bytes, float], int] | None = None) -> None:
        self.respond = respond or (lambda body, timeout: 0)
        self.bodies: list[bytes] = []
        self.attempts = 0
        self.cancelled = threading.Event()
        self.closed = False
        self._lock = threading.Lock()

    def prepare(self, body: bytes) -> bytes:
        return body

    def send(self, body: bytes, timeout: float) -> int:
        with self._lock:
            self.attempts += 1
        if self.cancelled.is_set():
            raise TransportError("cancelled", retryable=False)
        rejected = self.respond(body, timeout)
        with self._lock:
            self.bodies.append(body)
        return rejected

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        self.closed = True
