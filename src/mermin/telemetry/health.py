"""Health server on `internal "server"`: /livez, /readyz, /startup with JSON bodies.

* ``/readyz``  200 iff every readiness check passes (e.g. ``program_attached``,
  ``k8s_caches_synced``, ``exporter_ok``), else 503.
* ``/livez``   200 iff every liveness check passes (none by default: the process answers), else 503.
  Keep liveness checks to "the agent is wedged" conditions: a failing liveness probe restarts
  the pod.
* ``/startup`` 200 once startup is complete (:meth:`HealthServer.mark_started` was called, or
  the ``startup`` callable returns True), else 503. ``/readyz`` also requires it.

Body: ``{"status": "ok"|"unavailable", "checks": {"<name>": true|false, ...}}``. A check that
raises counts as failing (and is logged at debug level).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from mermin.config.internal import ServerConfig
from mermin.errors import MerminError
from mermin.telemetry._http import Response, RouteServer, json_response

__all__ = ["Check", "HealthServer", "evaluate"]

Check = Callable[[], bool]
log = logging.getLogger("mermin.telemetry.health")


def evaluate(checks: Mapping[str, Check]) -> tuple[bool, dict[str, bool]]:
    """Run every check; returns (all passed, {name: passed})."""
    results: dict[str, bool] = {}
    for name, check in checks.items():
        try:
            results[name] = bool(check())
        except Exception as exc:
            log.debug("health check %s raised: %s", name, exc)
            results[name] = False
    return all(results.values()), results


def _response(ok: bool, results: dict[str, bool]) -> Response:
    return json_response(200 if ok else 503, {"status": "ok" if ok else "unavailable",
                                              "checks": results})


class HealthServer(RouteServer):
    """Serves the probes the DaemonSet uses. Checks may be added or replaced while running."""

    def __init__(
        self,
        config: ServerConfig,
        checks: Mapping[str, Check] | None = None,
        *,
        live_checks: Mapping[str, Check] | None = None,
        startup: Check | None = None,
    ) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._ready: dict[str, Check] = dict(checks or {})
        self._live: dict[str, Check] = dict(live_checks or {})
        self._started = threading.Event()
        self._startup = startup
        routes = {"/livez": self._livez, "/readyz": self._readyz, "/startup": self._startup_route,
                  "/healthz": self._livez}
        super().__init__("health", config.listen_address, config.port, routes)

    def set_check(self, name: str, check: Check, *, live: bool = False) -> None:
        """Add or replace a readiness (or, with live=True, liveness) check."""
        with self._lock:
            (self._live if live else self._ready)[name] = check

    def remove_check(self, name: str) -> None:
        """Drop a check from both sets (e.g. the k8s check when enrichment is disabled)."""
        with self._lock:
            self._ready.pop(name, None)
            self._live.pop(name, None)

    def mark_started(self) -> None:
        """Startup finished: /startup answers 200 from now on."""
        self._started.set()

    @property
    def started(self) -> bool:
        """Startup complete: mark_started() was called or the startup callable says so."""
        if self._started.is_set():
            return True
        if self._startup is None:
            return False
        return evaluate({"startup": self._startup})[0]

    def ready(self) -> tuple[bool, dict[str, bool]]:
        """Readiness as /readyz computes it: started and every check passing."""
        with self._lock:
            checks = dict(self._ready)
        ok, results = evaluate(checks)
        started = self.started
        results["startup_complete"] = started
        return ok and started, results

    def _readyz(self) -> Response:
        return _response(*self.ready())

    def _livez(self) -> Response:
        with self._lock:
            checks = dict(self._live)
        return _response(*evaluate(checks))

    def _startup_route(self) -> Response:
        started = self.started
        return _response(started, {"startup_complete": started})

    def start(self) -> None:
        """Bind and serve; a busy port becomes a one-line MerminError."""
        if not self.config.enabled:
            return
        try:
            super().start()
        except OSError as exc:
            raise MerminError(
                f"cannot serve health endpoints on {self.config.listen_address}:"
                f"{self.config.port}: {exc.strerror}; set internal \"server\" {{ port = ... }}"
            ) from exc
