"""Enrichment: give both ends of every flow report a name.

`Enricher` is the seam (one `enrich(reports)` method plus lifecycle); implementations:
`K8sEnricher` (watches the cluster), `StaticEnricher` (inventory file), `ChainEnricher` (runs
several in order: Kubernetes first, the inventory fills what is left). `build_enricher()` picks
them from the config.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from mermin.config.k8s import AttributesConfig, InformerConfig
from mermin.enrich.k8s import K8sEnricher, K8sStats, KubeClient
from mermin.enrich.static import Inventory, StaticEnricher, StaticStats
from mermin.flows.record import FlowReport

__all__ = [
    "ChainEnricher",
    "Enricher",
    "Inventory",
    "K8sEnricher",
    "K8sStats",
    "StaticEnricher",
    "StaticStats",
    "build_enricher",
]

log = logging.getLogger("mermin.enrich")


@runtime_checkable
class Enricher(Protocol):
    """Fills `src_k8s`, `dst_k8s`, `policies_ingress`, `policies_egress` in place."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    def enrich(self, reports: Sequence[FlowReport]) -> None: ...

    @property
    def stats(self) -> Any: ...


class ChainEnricher:
    """Runs enrichers in order; ready when all are."""

    name = "chain"

    def __init__(self, enrichers: Sequence[Any]) -> None:
        self.enrichers = list(enrichers)

    def start(self) -> None:
        for e in self.enrichers:
            e.start()

    def stop(self) -> None:
        for e in reversed(self.enrichers):
            e.stop()

    @property
    def ready(self) -> bool:
        return all(e.ready for e in self.enrichers)

    @property
    def stats(self) -> dict[str, Any]:
        return {e.name: e.stats for e in self.enrichers}

    @property
    def cluster_uid(self) -> str | None:
        for e in self.enrichers:
            uid = getattr(e, "cluster_uid", None)
            if uid:
                return uid
        return None

    def enrich(self, reports: Sequence[FlowReport]) -> None:
        for e in self.enrichers:
            e.enrich(reports)


def build_enricher(config: Any, attributes: AttributesConfig | None = None,
                   ) -> K8sEnricher | StaticEnricher | ChainEnricher | None:
    """The enrichers the config asks for (not started): `build_enricher(root_config)` or
    `build_enricher(informer_config, attributes_config)`. Kubernetes when `attributes` enables
    it and credentials exist (in-cluster, kubeconfig_path, $KUBECONFIG or ~/.kube/config); the
    static inventory when `static_inventory` is set. None when neither applies."""
    if attributes is None:  # the root Config
        informer: InformerConfig = config.discovery.informer.k8s
        attributes = config.attributes
    else:
        informer = config
    chain: list[Any] = []
    if attributes.enabled:
        if KubeClient.available(informer.kubeconfig_path):
            chain.append(K8sEnricher(informer, attributes))
        else:
            log.warning("k8s: no in-cluster service account and no kubeconfig found; running "
                        "without Kubernetes attributes")
    if informer.static_inventory:
        chain.append(StaticEnricher(informer.static_inventory))
    if not chain:
        return None
    return chain[0] if len(chain) == 1 else ChainEnricher(chain)
