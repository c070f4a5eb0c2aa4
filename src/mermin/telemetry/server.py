"""Metrics HTTP server on `internal "metrics"`: /metrics, /metrics/standard, /metrics/debug,
/metrics:summary (a JSON catalogue of every metric)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mermin.config.internal import MetricsConfig
from mermin.errors import MerminError
from mermin.telemetry._http import Response, RouteServer, json_response
from mermin.telemetry.metrics import REGISTRY

__all__ = ["MetricsServer", "serve_metrics"]


class MetricsServer(RouteServer):
    """Prometheus endpoint serving :data:`mermin.telemetry.metrics.REGISTRY`."""

    def __init__(self, config: MetricsConfig, registry: CollectorRegistry = REGISTRY) -> None:
        self.config = config
        self.registry = registry
        routes = {
            "/metrics": self._metrics,
            "/metrics/standard": self._metrics,
            "/metrics/debug": self._debug,
            "/metrics:summary": self._summary,
        }
        super().__init__("metrics", config.listen_address, config.port, routes)

    def _metrics(self) -> Response:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def _debug(self) -> Response:
        if not self.config.debug_metrics_enabled:
            return 404, "text/plain", b"debug metrics disabled (internal.metrics)\n"
        return self._metrics()

    def _summary(self) -> Response:
        catalogue = []
        for family in self.registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
            catalogue.append({"name": name, "type": family.type, "help": family.documentation,
                              "labels": labels})
        return json_response(200, {"metrics": sorted(catalogue, key=lambda m: m["name"])})


def serve_metrics(config: MetricsConfig) -> MetricsServer | None:
    """Start the metrics server if enabled; a busy port becomes a one-line MerminError."""
    if not config.enabled:
        return None
    server = MetricsServer(config)
    try:
        server.start()
    except OSError as exc:
        raise MerminError(
            f"cannot serve metrics on {config.listen_address}:{config.port}: {exc.strerror}; "
            "set internal \"metrics\" { port = ... } or stop the other process"
        ) from exc
    return server
