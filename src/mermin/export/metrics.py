"""Exporter -> Prometheus (mermin.telemetry.metrics), once per batch, never per report.

Drop reasons in `mermin_export_dropped_total`: queue_full, retries_exhausted, non_retryable,
shutdown (ExportStats folds the two failure reasons into `export_failed`), closed_pipe.
"""

from __future__ import annotations

from mermin.telemetry import metrics as m

__all__ = ["dropped", "exported", "queue_capacity", "queue_size", "retry", "timeout"]


def exported(exporter: str, ok: int, rejected: int, batch: int, latency: float) -> None:
    if ok:
        m.EXPORT_FLOW_SPANS.labels(exporter, "ok").inc(ok)
    if rejected:
        m.EXPORT_FLOW_SPANS.labels(exporter, "error").inc(rejected)
    m.EXPORT_BATCH_SIZE.observe(batch)
    m.EXPORT_DURATION.labels(exporter).observe(latency)


def dropped(exporter: str, reason: str, n: int) -> None:
    m.EXPORT_DROPPED.labels(exporter, reason).inc(n)
    if reason in ("retries_exhausted", "non_retryable"):
        m.EXPORT_FLOW_SPANS.labels(exporter, "error").inc(n)


def retry(exporter: str) -> None:
    m.EXPORT_RETRIES.labels(exporter).inc()


def timeout(exporter: str) -> None:
    m.EXPORT_TIMEOUTS.labels(exporter).inc()


def queue_size(exporter: str, size: int) -> None:
    m.EXPORT_QUEUE_SIZE.labels(exporter).set(size)


def queue_capacity(exporter: str, capacity: int) -> None:
    m.EXPORT_QUEUE_CAPACITY.labels(exporter).set(capacity)
