"""K8sEnricher: informers + cluster state + per-direction attribute caches + policy cache."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mermin.config.k8s import AttributesConfig, InformerConfig
from mermin.enrich.k8s.attributes import Attributor, Entry
from mermin.enrich.k8s.client import KubeClient
from mermin.enrich.k8s.informer import Informer
from mermin.enrich.k8s.policies import evaluate
from mermin.enrich.k8s.projections import Projector
from mermin.enrich.k8s.resources import resources_for
from mermin.enrich.k8s.store import ClusterState
from mermin.flows.record import FlowReport

__all__ = ["K8sEnricher", "K8sStats"]

log = logging.getLogger("mermin.enrich.k8s")

CACHE_LIMIT = 200_000  # entries per cache before it is cleared (bounded memory)


@dataclass
class K8sStats:
    """Counters of the Kubernetes enricher (also exported as metrics when available)."""

    reports: int = 0
    undecorated: int = 0  # reports passed through before the initial sync
    src_named: int = 0
    dst_named: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    policy_evaluations: int = 0
    cache_resets: int = 0
    events: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, event) -> n


def _metrics() -> Any:
    try:
        from mermin.telemetry import metrics
    except ImportError:
        return None
    return metrics


class K8sEnricher:
    """Names both ends of every report from a watched cluster (see docs/kubernetes.md)."""

    name = "k8s"

    def __init__(self, informer: InformerConfig | None = None,
                 attributes: AttributesConfig | None = None, *,
                 client: KubeClient | None = None, min_backoff: float = 0.2,
                 max_backoff: float = 30.0) -> None:
        self.config = informer or InformerConfig()
        self.attributes = attributes or AttributesConfig()
        self.state = ClusterState(self.config.deleted_pod_grace)
        self.stats = K8sStats()
        self._client = client
        self._projector = Projector(self.config, self.attributes)
        self._src = self._attributor("source")
        same = self.attributes.k8s("source") == self.attributes.k8s("destination")
        self._dst = self._src if same else self._attributor("destination")
        tags = frozenset().union(*(a.tags for a in (self._src, self._dst) if a is not None))
        relation_kinds = {r.kind for r in self.config.selector_relations}
        label_kinds = set()
        for a in (self._src, self._dst):
            if a is not None:
                label_kinds |= set(a.labels) | set(a.annotations)
        self.resources = resources_for(tags, self.config.owner_relations.max_depth,
                                       relation_kinds, label_kinds)
        self.informers: list[Informer] = []
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._ready = False
        self._sync_timed_out = False
        self._src_cache: dict[str, Entry] = {}
        # both directions configured alike (the default): one resolver, one cache
        self._dst_cache: dict[str, Entry] = self._src_cache if same else {}
        self._policy_cache: dict[tuple[Any, ...], tuple[list[str] | None, list[str] | None]] = {}
        self._gen = -1
        self._pgen = -1
        self._events_lock = threading.Lock()
        self._metrics = _metrics()
        self._gauge_due = 0.0

    def _attributor(self, direction: str) -> Attributor | None:
        cfg = self.attributes.k8s(direction)
        if cfg is None:
            return None
        return Attributor(self.state, cfg, self.config.owner_relations)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, wait: bool = True) -> None:
        """Start one informer thread per kind; with `wait`, block until the initial sync or
        `informers_sync_timeout`, whichever comes first (then run undecorated until synced)."""
        if self._client is None:
            self._client = KubeClient(self.config.kubeconfig_path)
        log.info("k8s: watching %s via %s (%s)", ", ".join(r.plural for r in self.resources),
                 self._client.host, self._client.source)
        for res in self.resources:
            inf = Informer(self._client, res, res.projector(self._projector), self.state,
                           page_size=self.config.page_size, metrics=self._metrics,
                           watch_timeout=self.config.watch_timeout, on_event=self._on_event,
                           min_backoff=self._min_backoff, max_backoff=self._max_backoff)
            self.informers.append(inf)
            inf.start()
        if wait:
            self.wait_synced(self.config.informers_sync_timeout)

    def wait_synced(self, timeout: float) -> bool:
        """Wait for the initial list of every kind; log the outcome once."""
        started = time.monotonic()
        deadline = started + timeout
        for inf in self.informers:
            if not inf.synced.wait(max(0.0, deadline - time.monotonic())):
                pending = [i.kind for i in self.informers if not i.synced.is_set()]
                log.warning("k8s: initial sync not finished after %.0fs (waiting for %s); "
                            "exporting flows WITHOUT Kubernetes attributes until it is",
                            timeout, ", ".join(pending))
                self._sync_timed_out = True
                return False
        log.info("k8s: initial sync of %d kinds done in %.2fs (%d pods, %d services, %d nodes)",
                 len(self.informers), time.monotonic() - started, len(self.state.pods),
                 len(self.state.services), len(self.state.nodes))
        return self._check_ready()

    def stop(self) -> None:
        for inf in self.informers:
            inf.stop(timeout=0.0)
        for inf in self.informers:
            inf.stop(timeout=2.0)
        if self._client is not None:
            self._client.close()

    @property
    def ready(self) -> bool:
        """True once every watched kind finished its initial list."""
        return self._ready or self._check_ready()

    def _check_ready(self) -> bool:
        if not self._ready and self.informers and all(i.synced.is_set()
                                                       for i in self.informers):
            self._ready = True
            if self._sync_timed_out:
                log.warning("k8s: initial sync finished late; flows carry Kubernetes "
                            "attributes from now on")
        return self._ready

    @property
    def cluster_uid(self) -> str | None:
        """uid of the kube-system namespace (OTLP resource `k8s.cluster.uid`)."""
        return self.state.cluster_uid()

    def _on_event(self, kind: str, event: str, n: int) -> None:
        with self._events_lock:
            key = (kind, event)
            self.stats.events[key] = self.stats.events.get(key, 0) + n
        m = self._metrics
        counter = getattr(m, "K8S_WATCHER_EVENTS", None) if m is not None else None
        if counter is not None:
            counter.labels(kind=kind, event=event).inc(n)

    def _count_spans(self, status: str, n: int) -> None:
        counter = getattr(self._metrics, "K8S_DECORATOR_FLOW_SPANS", None)
        if counter is not None and n:
            counter.labels(status=status).inc(n)
        now = time.monotonic()
        gauge = getattr(self._metrics, "K8S_CACHE_OBJECTS", None)
        if gauge is not None and now >= self._gauge_due:
            self._gauge_due = now + 5.0
            st = self.state
            for kind, objs in (("pod", st.pods), ("service", st.services), ("node", st.nodes),
                               ("namespace", st.namespaces), ("endpointslice", st.slices),
                               ("networkpolicy", st.policies), ("owner", st.owners)):
                gauge.labels(kind=kind).set(len(objs))

    # -- enrichment --------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Apply invalidations announced by the watchers since the previous batch."""
        st = self.state
        st.purge_expired()
        if st.generation != self._gen:
            self._gen = st.generation
            self._src_cache.clear()
            self._dst_cache.clear()
            self._policy_cache.clear()
            self.stats.cache_resets += 1
            with st.lock:
                st.index.take_dirty()
        elif st.index.dirty:
            with st.lock:
                dirty = st.index.take_dirty()
            for ip in dirty:
                self._src_cache.pop(ip, None)
                self._dst_cache.pop(ip, None)
        if st.policy_generation != self._pgen:
            self._pgen = st.policy_generation
            self._policy_cache.clear()
        for cache in (self._src_cache, self._dst_cache, self._policy_cache):
            if len(cache) > CACHE_LIMIT:
                cache.clear()

    def enrich(self, reports: Sequence[FlowReport]) -> None:
        """Fill `src_k8s`, `dst_k8s` and `policies_*` of each report in place.

        The attribute maps and policy lists are cached and shared between reports (read-only
        `AttrMap`s); consumers must copy before changing them.
        """
        stats = self.stats
        stats.reports += len(reports)
        if not self._ready and not self._check_ready():
            stats.undecorated += len(reports)
            self._count_spans("undecorated", len(reports))
            return
        self._refresh()
        self._count_spans("ok", len(reports))
        src, dst = self._src, self._dst
        scache, dcache = self._src_cache, self._dst_cache
        sget, dget = scache.get, dcache.get
        policies = bool(self.state.policies_by_ns)
        pcache = self._policy_cache
        pget = pcache.get
        misses = src_named = dst_named = 0
        for r in reports:
            spod = dpod = None
            if src is not None:
                e = sget(r.src_addr)
                if e is None:
                    misses += 1
                    e = self._entry(src, scache, r.src_addr)
                a = e.base if e.by_port is None else e.by_port.get(r.src_port, e.base)
                if a is not None:
                    r.src_k8s = a
                    src_named += 1
                spod = e.pod
            if dst is not None:
                e = dget(r.dst_addr)
                if e is None:
                    misses += 1
                    e = self._entry(dst, dcache, r.dst_addr)
                a = e.base if e.by_port is None else e.by_port.get(r.dst_port, e.base)
                if a is not None:
                    r.dst_k8s = a
                    dst_named += 1
                dpod = e.pod
            if policies and (spod is not None or dpod is not None):
                key = (r.src_addr, spod, r.dst_addr, dpod, r.dst_port, r.protocol)
                verdict = pget(key)
                if verdict is None:
                    verdict = self._evaluate(key)
                r.policies_ingress, r.policies_egress = verdict
        lookups = (src is not None) + (dst is not None)
        stats.cache_misses += misses
        stats.cache_hits += lookups * len(reports) - misses
        stats.src_named += src_named
        stats.dst_named += dst_named

    def _entry(self, attributor: Attributor, cache: dict[str, Entry], ip: str) -> Entry:
        with self.state.lock:
            entry = attributor.lookup(ip)
        cache[ip] = entry
        return entry

    def _evaluate(self, key: tuple[Any, ...]) -> tuple[list[str] | None, list[str] | None]:
        self.stats.policy_evaluations += 1
        src_addr, spod, dst_addr, dpod, dport, proto = key
        with self.state.lock:
            ing, egr = evaluate(self.state, src_addr, spod, dst_addr, dpod, dport, proto)
        verdict = self._policy_cache[key] = (ing or None, egr or None)
        return verdict
