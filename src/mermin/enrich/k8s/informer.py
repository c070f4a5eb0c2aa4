"""List+watch of one resource kind in a daemon thread (what client-go's reflector does).

    list (paginated: limit/continue) -> state.replace -> synced
    watch from the list's resourceVersion with allowWatchBookmarks:
        ADDED/MODIFIED -> upsert, DELETED -> delete, BOOKMARK -> remember the resourceVersion,
        ERROR 410 / HTTP 410 (resourceVersion too old) -> relist,
        stream ended (server timeout) -> watch again from the last resourceVersion,
        connection dropped / other error -> back off (jittered, doubling to `max_backoff`)
        and resume the watch from the last resourceVersion (relist only if that is gone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from mermin.enrich.k8s.client import ApiStatusError, KubeClient
from mermin.enrich.k8s.resources import Resource
from mermin.enrich.k8s.store import ClusterState

__all__ = ["Informer"]

log = logging.getLogger("mermin.enrich.k8s")

EventSink = Callable[[str, str, int], None]  # (kind, event, count)


class _Gone(Exception):
    """The resourceVersion (or continue token) is too old: relist."""


class Informer:
    """One resource kind: a daemon thread keeping `state` in sync with the API server."""

    def __init__(self, client: KubeClient, resource: Resource,
                 project: Callable[[dict[str, Any]], Any], state: ClusterState, *,
                 page_size: int = 500, watch_timeout: float = 300.0,
                 on_event: EventSink | None = None, min_backoff: float = 0.2,
                 max_backoff: float = 30.0, connect_timeout: float = 10.0,
                 metrics: Any = None) -> None:
        self.client = client
        self.resource = resource
        self.kind = resource.kind
        self.project = project
        self.state = state
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.on_event = on_event or (lambda kind, event, n: None)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self._index_histogram = getattr(metrics, "K8S_WATCHER_IP_INDEX_UPDATE_DURATION", None)
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.relists = 0
        self.reconnects = 0
        self.last_error = ""
        self._warned = ""  # the error last logged at warning level (reset on success)
        self._stop = threading.Event()
        self._resp: Any = None
        self._watching = False  # the current response is a watch stream
        self._thread = threading.Thread(target=self._run, name=f"k8s-{self.kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread, unblocking a pending watch read by shutting its socket down."""
        self._stop.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):  # already closed
                resp.shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.min_backoff
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                    self.synced.set()
                self._watch()
                backoff = self.min_backoff
            except _Gone:
                self.relists += 1
                self.resource_version = None
                self.on_event(self.kind, "relist", 1)
                log.info("k8s %s: resourceVersion expired (410), relisting", self.kind)
            except ApiStatusError as exc:
                if exc.status in (403, 404) and not self.synced.is_set():
                    # RBAC or an API this cluster lacks: do not hold every other kind's
                    # attributes hostage; run without this kind and keep retrying slowly
                    log.warning("k8s %s: cannot list %s (HTTP %d): running without them; "
                                "grant list/watch on %s (see docs/kubernetes.md)", self.kind,
                                self.resource.path, exc.status, self.resource.plural)
                    self._warned = self.last_error = f"{type(exc).__name__}: {exc}"
                    self.on_event(self.kind, "error", 1)
                    self.synced.set()
                    backoff = self.max_backoff
                    self._stop.wait(backoff * (0.5 + random.random()))
                    continue
                backoff = self._failed(exc, backoff)
            except Exception as exc:  # network errors, HTTP errors, bad JSON: retry
                backoff = self._failed(exc, backoff)
            finally:
                self._close()

    def _failed(self, exc: Exception, backoff: float) -> float:
        """Count and log an error, wait, and return the next back-off."""
        if self._stop.is_set():
            return backoff
        self.reconnects += 1
        error = f"{type(exc).__name__}: {exc}"
        self.on_event(self.kind, "error", 1)
        # one warning per distinct error; repeats go to debug until it changes
        level = logging.DEBUG if error == self._warned else logging.WARNING
        self.last_error = self._warned = error
        log.log(level, "k8s %s: %s; retrying in %.1fs", self.kind, error, backoff)
        self._stop.wait(backoff * (0.5 + random.random()))
        return min(backoff * 2, self.max_backoff)

    def _close(self) -> None:
        """Give the connection back. A watch stream may end with unread bytes (an ERROR event
        before the final chunk, a stop, a broken stream): its connection is closed rather than
        reused, or the next request would read the old stream's leftovers."""
        resp, self._resp = self._resp, None
        if resp is None:
            return
        with contextlib.suppress(Exception):  # broken connection
            if self._watching:
                resp.close()
            resp.release_conn()

    def _get(self, query: list[tuple[str, Any]], read_timeout: float) -> Any:
        resp = self.client.get(self.resource.path, query, (self.connect_timeout, read_timeout))
        self._resp = resp
        if resp.status == 410:
            raise _Gone()
        if resp.status != 200:
            raise ApiStatusError(resp.status, self.resource.path, resp.read())
        self._warned = ""
        return resp

    def _list(self) -> None:
        started = time.monotonic()
        objs: list[Any] = []
        cont = ""
        rv = ""
        total = 0
        while True:
            query: list[tuple[str, Any]] = [("limit", self.page_size)]
            if cont:
                query.append(("continue", cont))
            self._watching = False
            resp = self._get(query, 60.0)
            body = json.loads(resp.read())
            self._close()
            items = body.get("items") or ()
            total += len(items)
            for item in items:
                proj = self.project(item)
                if proj is not None:
                    objs.append(proj)
            meta = body.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            cont = meta.get("continue") or ""
            if not cont or self._stop.is_set():
                break
        applied = time.monotonic()
        self.state.replace(self.kind, objs)
        if self._index_histogram is not None:
            self._index_histogram.observe(time.monotonic() - applied)
        self.resource_version = rv
        self.on_event(self.kind, "init", total)
        self.on_event(self.kind, "init_done", 1)
        log.debug("k8s %s: listed %d objects (kept %d) in %.2fs at rv %s", self.kind, total,
                  len(objs), time.monotonic() - started, rv)

    def _watch(self) -> None:
        query: list[tuple[str, Any]] = [
            ("watch", "true"), ("resourceVersion", self.resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", int(self.watch_timeout * (1 + random.random()) / 2 + 1)),
        ]
        self._watching = True
        resp = self._get(query, self.watch_timeout + 30.0)
        buf = b""
        for chunk in resp.stream(65536, decode_content=True):
            if self._stop.is_set():
                return
            buf += chunk
            if b"\n" not in buf:
                continue
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    self._event(json.loads(line))
        if buf.strip():
            self._event(json.loads(buf))

    def _event(self, event: dict[str, Any]) -> None:
        etype = event.get("type")
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise ApiStatusError(int(obj.get("code") or 0), self.resource.path,
                                 str(obj.get("message", "")).encode())
        if etype in ("ADDED", "MODIFIED"):
            proj = self.project(obj)
            if proj is None:  # filtered out by selectors: forget it if it was known
                self.state.delete(self.kind, meta.get("uid", ""))
            else:
                self.state.upsert(self.kind, proj)
            self.on_event(self.kind, "apply", 1)
        elif etype == "DELETED":
            self.state.delete(self.kind, meta.get("uid", ""))
            self.on_event(self.kind, "delete", 1)
        elif etype == "BOOKMARK":
            self.on_event(self.kind, "bookmark", 1)
        rv = meta.get("resourceVersion")
        if rv:
            self.resource_version = rv
