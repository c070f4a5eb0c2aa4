"""What every exporter shares: the `Exporter` protocol, its counters, the transport error."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mermin.errors import ExportError
from mermin.flows.record import FlowReport

__all__ = ["DROP_REASONS", "ExportStats", "Exporter", "TransportError"]

DROP_REASONS = ("queue_full", "export_failed", "shutdown")


@runtime_checkable
class Exporter(Protocol):
    """A sink of flow reports. `export` never blocks the caller and never raises."""

    name: str

    def start(self) -> None:
        """Start worker thread(s); reports exported before this wait in the queue."""

    def export(self, reports: Sequence[FlowReport]) -> None:
        """Hand over reports. Bounded: when the queue is full the oldest are dropped."""

    def shutdown(self, timeout: float) -> None:
        """Send what can be sent within `timeout` seconds, then stop; the rest is counted."""

    @property
    def stats(self) -> ExportStats: ...


@dataclass
class ExportStats:
    """Counters of one exporter (spans unless named otherwise). Updated under `lock`.

    `dropped` counts reports that never reached the receiver, by reason: `queue_full` (oldest
    dropped to make room), `export_failed` (non-retryable error or retries exhausted within
    max_export_timeout; `failed_non_retryable` / `failed_retries_exhausted` split it),
    `shutdown` (still queued or being retried when the shutdown timeout ran out), and for
    stdout `closed_pipe`.
    """

    exported: int = 0  # accepted by the receiver (partial rejections excluded)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    failed_non_retryable: int = 0
    failed_retries_exhausted: int = 0
    partial_rejected: int = 0  # spans the receiver rejected in a partial success response
    batches: int = 0  # requests that succeeded
    requests: int = 0  # attempts, retries included
    retries: int = 0
    timeouts: int = 0  # attempts that hit their timeout
    last_error: str | None = None
    latency_sum: float = 0.0  # seconds from first attempt to success, per successful batch
    latency_max: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def latency_avg(self) -> float:
        return self.latency_sum / self.batches if self.batches else 0.0

    def drop(self, reason: str, n: int) -> None:
        with self.lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def snapshot(self) -> dict[str, object]:
        """A plain dict copy (for logs, `mermin diagnose`, tests)."""
        with self.lock:
            return {
                "exported": self.exported,
                "dropped": dict(self.dropped),
                "failed_non_retryable": self.failed_non_retryable,
                "failed_retries_exhausted": self.failed_retries_exhausted,
                "partial_rejected": self.partial_rejected,
                "batches": self.batches,
                "requests": self.requests,
                "retries": self.retries,
                "timeouts": self.timeouts,
                "last_error": self.last_error,
                "latency_avg": self.latency_avg,
                "latency_max": self.latency_max,
            }


class TransportError(ExportError):
    """One failed export attempt, classified for the retry loop.

    `retry_after` is the server's hint in seconds (gRPC RetryInfo, HTTP Retry-After), if any.
    Messages never contain credentials: transports build them from status codes, server
    messages and the redacted endpoint only.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.retry_after = retry_after
        self.timeout = timeout
