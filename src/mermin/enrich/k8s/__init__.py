"""Kubernetes enrichment: informers (list+watch), compact projections, IP index, owner walk,
NetworkPolicy evaluation and cached per-endpoint attributes."""

from mermin.enrich.k8s.client import KubeClient
from mermin.enrich.k8s.enricher import K8sEnricher, K8sStats
from mermin.enrich.k8s.store import ClusterState

__all__ = ["ClusterState", "K8sEnricher", "K8sStats", "KubeClient"]
