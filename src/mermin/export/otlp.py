"""The OTLP exporter: bounded queue -> batches -> encode once -> concurrent sends with retry.

    export(reports) ──► BatchQueue (max_queue_size, drop oldest) ──► worker thread
        ──► encode + compress once per batch ──► sender pool (max_concurrent_exports)
        ──► transport.send() with retries until max_export_timeout

Nothing here blocks the caller of `export`. During an outage the queue absorbs up to
max_queue_size reports, plus at most max_concurrent_exports + 1 encoded batches being retried;
everything beyond that is dropped oldest-first and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from mermin.config.export import OtlpConfig
from mermin.export import metrics
from mermin.export.base import ExportStats, TransportError
from mermin.export.encode import SpanEncoder, encode_json
from mermin.export.queue import BatchQueue
from mermin.export.retry import Backoff
from mermin.flows.record import FlowReport
from mermin.telemetry.logging import RateLimitedLogger

__all__ = ["OtlpExporter", "Transport", "make_transport"]

log = logging.getLogger("mermin.export.otlp")


class Transport(Protocol):
    """One way of delivering an encoded request (gRPC, HTTP, or a test double)."""

    content_type: str  # "application/x-protobuf" or "application/json": which encoding

    def prepare(self, body: bytes) -> bytes:
        """Per-batch work before the first attempt (compression)."""

    def send(self, body: bytes, timeout: float) -> int:
        """One attempt; returns rejected spans; raises TransportError."""

    def cancel(self) -> None:
        """Abort attempts in flight (best effort)."""

    def close(self) -> None: ...


def make_transport(config: OtlpConfig) -> Transport:
    if config.protocol == "grpc":
        from mermin.export.grpc import GrpcTransport

        return GrpcTransport(config)
    from mermin.export.http import HttpTransport

    return HttpTransport(config)


class OtlpExporter:
    """Sends FlowReports as OTLP spans. See the module docstring for the data path."""

    name = "otlp"

    def __init__(
        self,
        config: OtlpConfig,
        resource: Mapping[str, Any],
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = 30.0,
    ) -> None:
        self.config = config
        self.resource = dict(resource)
        self._clock = clock
        self._transport = transport or make_transport(config)
        self._json = self._transport.content_type == "application/json"
        self._encoder = SpanEncoder(self.resource)
        self._queue: BatchQueue[FlowReport] = BatchQueue(
            config.max_queue_size, config.max_batch_size, config.max_batch_interval, clock
        )
        self._backoff = Backoff(config.retry)
        self._stats = ExportStats()
        self._slots = threading.Semaphore(config.max_concurrent_exports)
        # sender threads are daemons: one stuck in a call past the shutdown deadline must not
        # hold up process exit (a ThreadPoolExecutor's threads are joined at exit)
        self._jobs: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
        self._senders: list[threading.Thread] = []
        self._worker: threading.Thread | None = None
        self._closing = False  # no new reports accepted
        self._stop = threading.Event()  # hard stop: abandon retries and in-flight work
        self._deadline: float | None = None  # shutdown deadline (monotonic)
        self._idle = threading.Condition()
        self._busy = 0  # batches taken from the queue and not finished
        self._rlog = RateLimitedLogger(log, log_interval)
        metrics.queue_capacity(self.name, config.max_queue_size)

    # -- Exporter protocol ---------------------------------------------------------------------

    @property
    def stats(self) -> ExportStats:
        return self._stats

    @property
    def queued(self) -> int:
        """Reports waiting in the queue."""
        return len(self._queue)

    def start(self) -> None:
        if self._worker is not None:
            return
        self._worker = threading.Thread(target=self._run, name="mermin-otlp", daemon=True)
        self._worker.start()
        for i in range(self.config.max_concurrent_exports):
            t = threading.Thread(target=self._sender, name=f"mermin-otlp-send-{i}", daemon=True)
            t.start()
            self._senders.append(t)

    def export(self, reports: Sequence[FlowReport]) -> None:
        if not reports:
            return
        if self._closing:
            self._drop("shutdown", len(reports))
            return
        dropped = self._queue.put(reports)
        if self._stop.is_set():  # raced with shutdown's final drain: count what we just queued
            late = self._queue.drain()
            if late:
                self._drop("shutdown", len(late))
        if dropped:
            self._drop("queue_full", dropped)
            self._rlog.warning(
                "queue_full",
                "OTLP export queue full (%d reports): dropped the %d oldest; the receiver is "
                "slow or unreachable (%s)",
                self.config.max_queue_size, dropped, self._stats.last_error or "no error yet",
            )

    def force_flush(self, timeout: float) -> bool:
        """Send everything queued now and wait until it is done; False on timeout."""
        end = self._clock() + timeout
        self._queue.flush()
        with self._idle:
            while len(self._queue) or self._busy:
                left = end - self._clock()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
                self._queue.flush()
        return True

    def shutdown(self, timeout: float) -> None:
        """Stop accepting reports, send what is queued within `timeout`, then stop. Reports
        still queued or being retried at the deadline are counted as dropped (shutdown)."""
        if self._closing and self._stop.is_set():
            return
        self._closing = True
        self._deadline = self._clock() + max(0.0, timeout)
        self._queue.close()
        if self._worker is not None:
            self._worker.join(max(0.0, self._deadline - self._clock()))
        with self._idle:
            while self._busy and self._clock() < self._deadline:
                self._idle.wait(min(0.05, max(0.0, self._deadline - self._clock())))
        self._stop.set()  # anything still retrying gives up now
        self._transport.cancel()
        left = self._queue.drain()
        if left:
            self._drop("shutdown", len(left))
        for _ in self._senders:
            self._jobs.put(None)
        grace = self._clock() + 1.0
        for t in [self._worker, *self._senders]:
            if t is not None:
                t.join(max(0.0, grace - self._clock()))
        self._transport.close()
        s = self._stats.snapshot()
        log.info(
            "OTLP exporter stopped: %d spans exported, dropped %s, %d retries",
            s["exported"], s["dropped"], s["retries"],
        )

    # -- worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._queue.get_batch(timeout=1.0)
            if batch is None:  # closed and drained
                return
            if not batch:
                continue
            with self._idle:
                self._busy += 1
            try:
                body = self._encode(batch)
            except Exception as exc:  # a bug, never a receiver problem: count, log, go on
                self._finish_failed(len(batch), f"encoding failed: {exc!r}", retryable=False)
                log.exception("OTLP encoding failed; %d reports dropped", len(batch))
                self._done()
                continue
            while not self._slots.acquire(timeout=0.2):
                if self._stop.is_set():
                    self._drop("shutdown", len(batch))
                    self._done()
                    return
            self._jobs.put((body, len(batch)))
            metrics.queue_size(self.name, len(self._queue))

    def _encode(self, batch: list[FlowReport]) -> bytes:
        body = encode_json(batch, self.resource) if self._json else self._encoder.encode(batch)
        return self._transport.prepare(body)

    def _sender(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            body, n = job
            try:
                self._attempts(body, n)
            except Exception as exc:  # never let a sender thread die silently
                if self._stop.is_set():
                    self._drop("shutdown", n)
                else:
                    self._finish_failed(n, f"unexpected error: {exc!r}", retryable=False)
                    log.exception("OTLP export failed unexpectedly")
            finally:
                self._slots.release()
                self._done()

    def _attempts(self, body: bytes, n: int) -> None:
        cfg = self.config
        start = self._clock()
        deadline = start + cfg.max_export_timeout
        attempt = 0
        while True:
            now = self._clock()
            limit = min(deadline, self._deadline or deadline)
            if self._stop.is_set():
                self._drop("shutdown", n)
                return
            timeout = min(cfg.timeout, limit - now)
            if timeout <= 0:
                if self._deadline is not None and limit == self._deadline:
                    self._drop("shutdown", n)
                else:
                    self._finish_failed(n, self._stats.last_error or "export timed out", True)
                return
            with self._stats.lock:
                self._stats.requests += 1
            try:
                rejected = self._transport.send(body, timeout)
            except TransportError as exc:
                if self._stop.is_set():
                    self._drop("shutdown", n)
                    return
                self._record_error(exc)
                if not exc.retryable or not cfg.retry.enabled:
                    self._finish_failed(n, str(exc), retryable=exc.retryable)
                    return
                delay = self._backoff.delay(attempt, exc.retry_after)
                attempt += 1
                if self._clock() + delay >= limit:
                    if self._deadline is not None and limit == self._deadline:
                        self._drop("shutdown", n)
                    else:
                        self._finish_failed(n, str(exc), retryable=True)
                    return
                with self._stats.lock:
                    self._stats.retries += 1
                metrics.retry(self.name)
                if self._stop.wait(delay):
                    self._drop("shutdown", n)
                    return
                continue
            self._finish_ok(n, rejected, self._clock() - start)
            return

    # -- accounting ----------------------------------------------------------------------------

    def _record_error(self, exc: TransportError) -> None:
        with self._stats.lock:
            self._stats.last_error = str(exc)
            if exc.timeout:
                self._stats.timeouts += 1
        if exc.timeout:
            metrics.timeout(self.name)
        self._rlog.warning("attempt", "OTLP export attempt failed: %s", exc)

    def _finish_ok(self, n: int, rejected: int, latency: float) -> None:
        rejected = max(0, min(rejected, n))
        s = self._stats
        with s.lock:
            s.exported += n - rejected
            s.partial_rejected += rejected
            s.batches += 1
            s.latency_sum += latency
            s.latency_max = max(s.latency_max, latency)
        metrics.exported(self.name, n - rejected, rejected, n, latency)
        if rejected:
            self._rlog.warning(
                "partial", "OTLP receiver rejected %d of %d spans (partial success)", rejected, n
            )

    def _finish_failed(self, n: int, error: str, retryable: bool) -> None:
        s = self._stats
        with s.lock:
            s.dropped["export_failed"] = s.dropped.get("export_failed", 0) + n
            if retryable:
                s.failed_retries_exhausted += n
            else:
                s.failed_non_retryable += n
            s.last_error = error
        metrics.dropped(self.name, "retries_exhausted" if retryable else "non_retryable", n)
        self._rlog.error(
            "failed", "OTLP export of %d spans failed%s: %s", n,
            " (retries exhausted)" if retryable else "", error,
        )

    def _drop(self, reason: str, n: int) -> None:
        self._stats.drop(reason, n)
        metrics.dropped(self.name, reason, n)

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()
