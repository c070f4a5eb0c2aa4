"""The agent's view of the cluster: compact projections per kind, kept current by the informers,
and the IP index derived from them.

Writers (one informer thread per kind) call `upsert`/`delete`/`replace` under `lock`. Readers
(the enricher on the poll thread) read the plain dicts without the lock: every value is an
immutable projection, dict gets are atomic, and anything that can change an endpoint's
attributes is announced through `index.dirty` (per address) or `generation` (everything), so the
enricher's caches are invalidated by events instead of being recomputed per report.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from mermin.enrich.k8s.ipindex import ENDPOINT, FADING, HOSTNET, NODE, POD, SERVICE, IpIndex
from mermin.enrich.k8s.projections import (
    EndpointSlice,
    Namespace,
    NetworkPolicy,
    Node,
    Owner,
    Pod,
    Service,
)

__all__ = ["ClusterState"]


class ClusterState:
    """Projections by uid per kind, plus the indexes the enricher reads."""

    def __init__(self, deleted_pod_grace: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.RLock()
        self.grace = deleted_pod_grace
        self.clock = clock
        self.pods: dict[str, Pod] = {}
        self.services: dict[str, Service] = {}
        self.nodes: dict[str, Node] = {}
        self.namespaces: dict[str, Namespace] = {}
        self.ns_by_name: dict[str, Namespace] = {}
        self.owners: dict[str, Owner] = {}  # every owner kind, by uid (the walk's lookup)
        self.slices: dict[str, EndpointSlice] = {}
        self.policies: dict[str, NetworkPolicy] = {}
        self.policies_by_ns: dict[str, tuple[NetworkPolicy, ...]] = {}
        # selector-relation objects: kind -> namespace -> uid -> object with .selector
        self.relations: dict[str, dict[str, dict[str, Any]]] = {}
        self.index = IpIndex()
        self.generation = 0  # bumped when attributes of any endpoint may change
        self.policy_generation = 0  # bumped when policy verdicts may change
        self._tombstones: dict[str, tuple[float, Pod]] = {}
        self._expiry: list[tuple[float, str]] = []
        self.changes = 0  # applied changes (for stats / benchmarks)
        self._kinds: dict[str, dict[str, Any]] = {
            "pod": self.pods, "service": self.services, "node": self.nodes,
            "namespace": self.namespaces, "endpointslice": self.slices,
            "networkpolicy": self.policies}

    # -- public write API (watcher threads) --------------------------------------------------
    def upsert(self, kind: str, obj: Any) -> bool:
        """Apply an ADDED/MODIFIED projection. Returns False when nothing relevant changed."""
        with self.lock:
            store = self._store(kind)
            old = store.get(obj.uid)
            if old is not None and old.same(obj):
                return False
            store[obj.uid] = obj
            self._on_change(kind, old, obj)
            self.changes += 1
            return True

    def delete(self, kind: str, uid: str) -> bool:
        """Apply a DELETED event (or a filtered-out object). Returns False when unknown."""
        with self.lock:
            old = self._store(kind).pop(uid, None)
            if old is None:
                return False
            self._on_change(kind, old, None)
            self.changes += 1
            return True

    def replace(self, kind: str, objs: Iterable[Any]) -> None:
        """A full (re)list: objects missing from it are deleted, the rest upserted."""
        with self.lock:
            fresh = {o.uid: o for o in objs}
            for uid in [u for u in self._store(kind) if u not in fresh]:
                self.delete(kind, uid)
            for obj in fresh.values():
                self.upsert(kind, obj)

    def purge_expired(self, now: float | None = None) -> int:
        """Drop deleted pods whose grace period is over. Cheap when nothing is due."""
        if not self._expiry:
            return 0
        now = self.clock() if now is None else now
        if self._expiry[0][0] > now:
            return 0
        purged = 0
        with self.lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, uid = heapq.heappop(self._expiry)
                entry = self._tombstones.get(uid)
                if entry is None or entry[0] > now:
                    continue
                del self._tombstones[uid]
                for ip in entry[1].ips:
                    self.index.remove(ip, "pod", uid)
                purged += 1
        return purged

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def cluster_uid(self) -> str | None:
        ns = self.ns_by_name.get("kube-system")
        return ns.uid if ns is not None else None

    # -- internals ---------------------------------------------------------------------------
    def _store(self, kind: str) -> dict[str, Any]:
        store = self._kinds.get(kind)
        if store is None:
            store = self._kinds[kind] = {}
        return store

    def _on_change(self, kind: str, old: Any, new: Any) -> None:
        if kind == "pod":
            self._pod_change(old, new)
        elif kind == "service":
            self._ips(old, "service", SERVICE, lambda s: s.ips)
            self._ips(new, "service", SERVICE, lambda s: s.ips, add=True)
            self._relation(kind, old, new)
        elif kind == "node":
            self._ips(old, "node", NODE, lambda n: [(ip, "node_ip") for ip in n.ips])
            self._ips(new, "node", NODE, lambda n: [(ip, "node_ip") for ip in n.ips], add=True)
        elif kind == "endpointslice":
            self._slice_change(old, new)
        elif kind == "namespace":
            if old is not None:
                self.ns_by_name.pop(old.name, None)
            if new is not None:
                self.ns_by_name[new.name] = new
            self.generation += 1
            self.policy_generation += 1
        elif kind == "networkpolicy":
            ns = (new or old).namespace
            items = {p.uid: p for p in self.policies_by_ns.get(ns, ())}
            items.pop((old or new).uid, None)
            if new is not None:
                items[new.uid] = new
            if items:
                self.policies_by_ns[ns] = tuple(sorted(items.values(), key=lambda p: p.name))
            else:
                self.policies_by_ns.pop(ns, None)
            self.policy_generation += 1
        else:  # owners: one store per kind for relists, one uid lookup for the walk
            if old is not None:
                self.owners.pop(old.uid, None)
            if new is not None:
                self.owners[new.uid] = new
            self.generation += 1
            self._relation(kind, old, new)

    def _ips(self, obj: Any, kind: str, prio: int, ips: Callable[[Any], Iterable[Any]],
             add: bool = False) -> None:
        if obj is None:
            return
        for ip, tag in ips(obj):
            if add:
                self.index.add(ip, prio, kind, obj.uid, obj, tag)
            else:
                self.index.remove(ip, kind, obj.uid)

    def _pod_change(self, old: Pod | None, new: Pod | None) -> None:
        uid = (new or old).uid  # type: ignore[union-attr]
        if new is not None and uid in self._tombstones:
            old = self._tombstones.pop(uid)[1]  # came back (relist): undo the tombstone
        if old is not None:
            for ip in old.ips:
                self.index.remove(ip, "pod", uid)
            if old.host_network:
                for ip in old.host_ips:
                    self.index.remove(ip, "pod", uid)
        if new is None:
            if old is not None and not old.host_network and not old.finished and self.grace > 0:
                expiry = self.clock() + self.grace
                self._tombstones[uid] = (expiry, old)
                heapq.heappush(self._expiry, (expiry, uid))
                for ip in old.ips:
                    self.index.add(ip, FADING, "pod", uid, old, "pod_ip")
            return
        if new.finished:
            return  # a completed pod's IP belongs to whoever gets it next
        if new.host_network:
            for ip in new.host_ips:
                self.index.add(ip, HOSTNET, "pod", uid, new, "host_ip")
            return
        prio = FADING if new.terminating else POD
        for ip in new.ips:
            self.index.add(ip, prio, "pod", uid, new, "pod_ip")

    def _slice_change(self, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        if old is not None:
            for ref in old.endpoints:
                self.index.remove(ref.ip, "endpoint", old.uid)
        if new is not None:
            for ref in new.endpoints:
                self.index.add(ref.ip, ENDPOINT, "endpoint", new.uid, (new, ref), "endpoint_ip")

    def _relation(self, kind: str, old: Any, new: Any) -> None:
        old_sel = getattr(old, "selector", None)
        new_sel = getattr(new, "selector", None)
        if old_sel is None and new_sel is None:
            return
        by_ns = self.relations.setdefault(kind, {})
        if old is not None:
            by_ns.get(old.namespace, {}).pop(old.uid, None)
        if new is not None and new_sel is not None:
            by_ns.setdefault(new.namespace, {})[new.uid] = new
        self.generation += 1
