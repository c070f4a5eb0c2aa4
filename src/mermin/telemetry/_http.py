"""A tiny threaded HTTP server for the metrics and health endpoints (stdlib only)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Response", "Route", "RouteServer"]

Response = tuple[int, str, bytes]
"""(status, content type, body)."""
Route = Callable[[], Response]

log = logging.getLogger("mermin.telemetry")


def json_response(status: int, body: object) -> Response:
    """Encode `body` as a JSON response."""
    return status, "application/json", json.dumps(body, sort_keys=True).encode() + b"\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    routes: dict[str, Route]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _respond(self, head_only: bool) -> None:
        path = self.path.split("?", 1)[0]
        route = self.server.routes.get(path)
        try:
            status, ctype, body = route() if route else (404, "text/plain", b"not found\n")
        except Exception as exc:  # a failing route must not kill the server thread
            log.warning("telemetry endpoint %s failed: %s", path, exc)
            status, ctype, body = 500, "text/plain", f"error: {exc}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond(head_only=False)

    def do_HEAD(self) -> None:
        self._respond(head_only=True)

    def log_message(self, format: str, *args: object) -> None:
        """Probe requests every few seconds: keep them out of the agent's log."""
        log.debug("%s %s", self.address_string(), format % args)


class RouteServer:
    """Serves a fixed set of GET routes from a daemon thread; `start()` / `stop()`."""

    def __init__(self, name: str, host: str, port: int, routes: dict[str, Route]) -> None:
        self.name = name
        self._host, self._port = host, port
        self._routes = routes
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def address(self) -> str:
        """`host:port` the server listens on."""
        return f"{self._host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a background thread. Raises OSError if the port is taken."""
        if self._httpd is not None:
            return
        httpd = _Server((self._host, self._port), _Handler)
        httpd.routes = self._routes
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.5},
            name=f"mermin-{self.name}-http", daemon=True,
        )
        self._thread.start()
        log.info("%s server listening on %s", self.name, self.address)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RouteServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
