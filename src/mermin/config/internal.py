"""`internal "metrics"|"server"|"traces" {}`: the agent's own metrics, health server and traces.

Keys and defaults are the original Mermin's (inventory §5.11)::

    internal "metrics" {
      enabled               = true
      listen_address        = "0.0.0.0"
      port                  = 10250
      debug_metrics_enabled = false
      stale_metric_ttl      = "5m"
      histogram_buckets {
        mermin_pipeline_duration_seconds = [0.00001, 0.0001, 0.001, 0.01, 0.1, 1, 10, 60]
      }
    }
    internal "server" { enabled = true, listen_address = "0.0.0.0", port = 8080 }
    internal "traces" { span_fmt = "full" }
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from mermin.config.base import Duration, StrictModel

__all__ = ["InternalConfig", "MetricsConfig", "ServerConfig", "TracesConfig"]

_HISTOGRAMS = (
    "mermin_pipeline_duration_seconds",
    "mermin_export_batch_size",
    "mermin_k8s_watcher_ip_index_update_duration_seconds",
    "mermin_shutdown_duration_seconds",
    "mermin_export_duration_seconds",
    "mermin_poll_duration_seconds",
)


class MetricsConfig(StrictModel):
    """Prometheus endpoint (`/metrics`) serving the agent's own metrics."""

    enabled: bool = Field(True, description="Serve Prometheus metrics.")
    listen_address: str = Field("0.0.0.0", description="Address the metrics server binds to.")
    port: int = Field(10250, ge=0, le=65535, description="TCP port of the metrics server.")
    debug_metrics_enabled: bool = Field(
        False, description="Serve /metrics/debug (404 otherwise). This agent has no separate "
        "high-cardinality debug series: the path serves the same metrics as /metrics.",
    )
    stale_metric_ttl: Duration = Field(
        300.0, description="Accepted for compatibility (e.g. '5m'); no effect: the original "
        "expired its per-interface debug series after it, and this agent has none.",
    )
    histogram_buckets: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Bucket upper bounds per histogram name, replacing the defaults "
        f"(names: {', '.join(_HISTOGRAMS)}).",
    )

    @field_validator("histogram_buckets")
    @classmethod
    def _known_sorted(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, bounds in value.items():
            if name not in _HISTOGRAMS:
                raise ValueError(f"unknown histogram {name!r}; one of: {', '.join(_HISTOGRAMS)}")
            if not bounds or list(bounds) != sorted(bounds) or len(set(bounds)) != len(bounds):
                raise ValueError(f"buckets of {name} must be a non-empty increasing list")
        return value


class ServerConfig(StrictModel):
    """Health server: `/livez`, `/readyz`, `/startup`."""

    enabled: bool = Field(True, description="Serve the health endpoints.")
    listen_address: str = Field("0.0.0.0", description="Address the health server binds to.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the health server.")


class TracesConfig(StrictModel):
    """Exporter for the agent's own traces (accepted for compatibility; logs go to stderr)."""

    span_fmt: Literal["full"] = Field(
        "full", description="Span format; only 'full' exists. Accepted for compatibility.",
    )
    stdout: Any = Field(
        None, description="Accepted for compatibility; no effect (the agent's own diagnostics "
        "are its logs and metrics).",
    )
    otlp: dict[str, Any] | None = Field(
        None, description="Accepted for compatibility; no effect (the original exported its "
        "own tracing here).",
    )


class InternalConfig(StrictModel):
    """The `internal` blocks: `internal "metrics"`, `internal "server"`, `internal "traces"`."""

    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Prometheus metrics endpoint.",
    )
    server: ServerConfig = Field(
        default_factory=ServerConfig, description="Health endpoints (livez/readyz/startup).",
    )
    traces: TracesConfig = Field(
        default_factory=TracesConfig, description="The agent's own trace export.",
    )
