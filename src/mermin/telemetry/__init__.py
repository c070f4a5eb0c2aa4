"""Telemetry of the agent itself: Prometheus metrics, health endpoints, logging.

``mermin.telemetry.metrics`` holds every metric object (import it directly); this package
re-exports the servers and logging helpers.
"""

from mermin.telemetry.health import HealthServer
from mermin.telemetry.logging import RateLimitedLogger, log_every, setup_logging
from mermin.telemetry.metrics import start_metrics_server
from mermin.telemetry.server import MetricsServer, serve_metrics

__all__ = [
    "HealthServer",
    "MetricsServer",
    "RateLimitedLogger",
    "log_every",
    "serve_metrics",
    "setup_logging",
    "start_metrics_server",
]
