"""A Kubernetes API test server speaking the real list/watch wire protocol.

What it implements (enough for client-go-style reflectors and the `kubernetes` client):

* cluster-wide `GET /api/v1/<plural>` and `GET /apis/<group>/<version>/<plural>` lists with
  `resourceVersion` in the list metadata and `limit`/`continue` pagination over a snapshot;
  an expired continue token answers HTTP 410 (reason Expired), like the real server;
* `?watch=true&resourceVersion=N[&allowWatchBookmarks=true][&timeoutSeconds=T]`: a chunked stream
  of JSON lines `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}` replaying the
  events after N, then live ones; a too-old N gets an ERROR event with a 410 Status (default) or
  an HTTP 410 (`gone_as_http = True`);
* bearer-token auth (401 otherwise), so the client's kubeconfig auth path is exercised;
* fault injection: `forbidden` (plurals answered 403, like missing RBAC), `compact()` (older
  resourceVersions -> 410), `drop_watches()` (abruptly close every open watch connection),
  `fail_next(n, status)`, `hold_lists` (an Event that blocks list calls until set), and a
  request log.

One global resourceVersion counter like etcd. Objects are stored pre-serialized so large
clusters (the benchmark's 10k pods) list quickly.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import json
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["ApiServer", "write_kubeconfig"]

# plural -> (api prefix, kind, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "namespaces": ("/api/v1", "Namespace", False),
    "pods": ("/api/v1", "Pod", True),
    "services": ("/api/v1", "Service", True),
    "nodes": ("/api/v1", "Node", False),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "EndpointSlice", True),
    "replicasets": ("/apis/apps/v1", "ReplicaSet", True),
    "deployments": ("/apis/apps/v1", "Deployment", True),
    "statefulsets": ("/apis/apps/v1", "StatefulSet", True),
    "daemonsets": ("/apis/apps/v1", "DaemonSet", True),
    "jobs": ("/apis/batch/v1", "Job", True),
    "cronjobs": ("/apis/batch/v1", "CronJob", True),
    "networkpolicies": ("/apis/networking.k8s.io/v1", "NetworkPolicy", True),
}
_PATHS = {f"{prefix}/{plural}": plural for plural, (prefix, _, _) in RESOURCES.items()}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-response (watch stopped, connection dropped) are normal."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class ApiServer:
    """The cluster state plus an HTTP server on 127.0.0.1:<ephemeral>. Use as a context manager.
    """

    def __init__(self, token: str = "test-token", bookmark_interval: float = 0.5,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.gone_as_http = False
        self.hold_lists = threading.Event()
        self.hold_lists.set()
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (plural, "list"|"watch", q)
        self._lock = threading.Condition()
        self._rv = 100
        self._objects: dict[str, dict[tuple[str, str], bytes]] = defaultdict(dict)
        # per plural: resourceVersions and event lines, in order (bisected by watches)
        self._log_rv: dict[str, list[int]] = defaultdict(list)
        self._log: dict[str, list[bytes]] = defaultdict(list)
        self._compacted: dict[str, int] = defaultdict(int)
        self._snapshots: dict[str, tuple[int, list[bytes]]] = {}
        self._drop_gen = 0
        self._fail: list[int] = []
        self.forbidden: set[str] = set()  # plurals answered with 403 (missing RBAC)
        self._closing = False
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.scheme = "http"
        if ssl_context is not None:  # HTTPS, like a real API server (TLS handshake on accept)
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="k8s-apiserver")

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def __enter__(self) -> ApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self.hold_lists.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- cluster state -----------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._rv

    def _store(self, plural: str, obj: dict[str, Any], etype: str) -> dict[str, Any]:
        if plural not in RESOURCES:
            raise KeyError(plural)
        prefix, kind, namespaced = RESOURCES[plural]
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        if namespaced:
            meta.setdefault("namespace", "default")
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", prefix.removeprefix("/api/").removeprefix("/apis/"))
        key = (meta.get("namespace", ""), meta["name"])
        with self._lock:
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            data = json.dumps(obj, separators=(",", ":")).encode()
            if etype == "DELETED":
                self._objects[plural].pop(key, None)
            else:
                self._objects[plural][key] = data
            line = b'{"type":"' + etype.encode() + b'","object":' + data + b"}\n"
            self._log_rv[plural].append(self._rv)
            self._log[plural].append(line)
            self._lock.notify_all()
        return obj

    def add(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object (ADDED event)."""
        return self._store(plural, obj, "ADDED")

    def modify(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace an object (MODIFIED event); keep its uid."""
        return self._store(plural, obj, "MODIFIED")

    def delete(self, plural: str, obj: dict[str, Any]) -> None:
        """Delete an object (DELETED event carrying its last state)."""
        self._store(plural, obj, "DELETED")

    def add_many(self, plural: str, objs: list[dict[str, Any]]) -> None:
        for obj in objs:
            self.add(plural, obj)

    def compact(self) -> None:
        """Forget history: every resourceVersion issued so far becomes too old (410)."""
        with self._lock:
            for plural in RESOURCES:
                self._compacted[plural] = self._rv
                self._log[plural].clear()
                self._log_rv[plural].clear()
            self._snapshots.clear()
            self._rv += 1

    def drop_watches(self) -> None:
        """Abruptly close every open watch connection (no terminating chunk)."""
        with self._lock:
            self._drop_gen += 1
            self._lock.notify_all()

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` requests with `status`."""
        with self._lock:
            self._fail.extend([status] * n)

    def count(self, plural: str, what: str) -> int:
        """Requests seen so far for a plural ("list" or "watch")."""
        return sum(1 for p, w, _ in list(self.requests) if p == plural and w == what)

    # -- HTTP ----------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

        return Handler

    def _reply(self, h: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        scheme, _, credential = (h.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or credential != self.token:  # scheme is case-insensitive
            self._reply(h, 401, json.dumps(_status(401, "Unauthorized", "bad token")).encode())
            return
        plural = _PATHS.get(url.path.rstrip("/"))
        if plural is None:
            self._reply(h, 404, json.dumps(_status(404, "NotFound", url.path)).encode())
            return
        if plural in self.forbidden:
            body = _status(403, "Forbidden", f'{plural} is forbidden: User "test" cannot list '
                           f'resource "{plural}" at the cluster scope')
            self._reply(h, 403, json.dumps(body).encode())
            return
        watch = q.get("watch") in ("1", "true")
        self.requests.append((plural, "watch" if watch else "list", q))
        with self._lock:
            fail = self._fail.pop(0) if self._fail else None
        if fail is not None:
            self._reply(h, fail, json.dumps(_status(fail, "InternalError", "injected")).encode())
            return
        if watch:
            self._watch(h, plural, q)
        else:
            self.hold_lists.wait()
            self._list(h, plural, q)

    def _list(self, h: BaseHTTPRequestHandler, plural: str, q: dict[str, str]) -> None:
        limit = int(q.get("limit") or 0)
        token = q.get("continue")
        with self._lock:
            if token:
                state = json.loads(base64.urlsafe_b64decode(token))
                snap = self._snapshots.get(state["id"])
                if snap is None or state["rv"] <= self._compacted[plural]:
                    body = _status(410, "Expired", "The provided continue parameter is too old")
                    self._reply(h, 410, json.dumps(body).encode())
                    return
                rv, items = snap
                start = state["start"]
            else:
                rv = self._rv
                items = [self._objects[plural][k] for k in sorted(self._objects[plural])]
                start = 0
        end = len(items) if not limit else min(len(items), start + limit)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if end < len(items):
            snap_id = uuid.uuid4().hex
            with self._lock:
                self._snapshots[snap_id] = (rv, items)
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"id": snap_id, "rv": rv, "start": end}).encode()).decode()
            meta["remainingItemCount"] = len(items) - end
        kind = RESOURCES[plural][1]
        head = json.dumps({"kind": kind + "List", "apiVersion": "v1", "metadata": meta})
        body = head[:-1].encode() + b',"items":[' + b",".join(items[start:end]) + b"]}"
        self._reply(h, 200, body)

    def _watch(self, h: BaseHTTPRequestHandler, plural: str, q: dict[str, str]) -> None:
        since = int(q.get("resourceVersion") or 0)
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        with self._lock:
            too_old = since and since <= self._compacted[plural]
            drop_gen = self._drop_gen
        if too_old and self.gone_as_http:
            body = _status(410, "Expired", "too old resource version")
            self._reply(h, 410, json.dumps(body).encode())
            return
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def send(data: bytes) -> None:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        try:
            if too_old:
                err = _status(410, "Expired", f"too old resource version: {since}")
                send(json.dumps({"type": "ERROR", "object": err}).encode() + b"\n")
                send(b"")
                return
            sent_rv = since
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                with self._lock:
                    # pending and current_rv are taken together: every event of this plural
                    # up to current_rv is either in `pending` or was sent before, so a
                    # bookmark at current_rv never skips an undelivered event
                    rvs = self._log_rv[plural]
                    pending = self._log[plural][bisect.bisect_right(rvs, sent_rv):]
                    if pending:
                        sent_rv = rvs[-1]
                    current_rv = self._rv
                    closing, dropped = self._closing, self._drop_gen != drop_gen
                if dropped or closing:
                    with contextlib.suppress(OSError):
                        h.connection.shutdown(socket.SHUT_RDWR)
                    h.close_connection = True
                    return
                if pending:
                    send(b"".join(pending))
                now = time.monotonic()
                if bookmarks and now >= next_bookmark:
                    next_bookmark = now + self.bookmark_interval
                    mark = {"type": "BOOKMARK", "object": {
                        "kind": RESOURCES[plural][1], "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(max(sent_rv, current_rv))}}}
                    sent_rv = max(sent_rv, current_rv)
                    send(json.dumps(mark).encode() + b"\n")
                if now >= deadline:
                    send(b"")
                    return
                with self._lock:  # sleep until an event, a drop, a bookmark or the deadline
                    rvs = self._log_rv[plural]
                    idle = not (rvs and rvs[-1] > sent_rv) and not self._closing \
                        and self._drop_gen == drop_gen
                    if idle:
                        self._lock.wait(max(0.0, min(deadline, next_bookmark) - now))
        except (BrokenPipeError, ConnectionResetError, OSError):
            h.close_connection = True


def write_kubeconfig(path: Path, server: str, token: str = "test-token") -> Path:
    """A kubeconfig with one cluster/user (bearer token) and current-context set."""
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }
    path.write_text(json.dumps(cfg))
    return path
