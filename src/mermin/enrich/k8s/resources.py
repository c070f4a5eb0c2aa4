"""The kinds the agent watches: API path and how each is projected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mermin.enrich.k8s.projections import Projector

__all__ = ["RESOURCES", "Resource", "resources_for"]


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str  # lowercase kind, also the store key
    group: str  # "" for core
    plural: str
    path: str  # cluster-wide list/watch path

    def projector(self, p: Projector) -> Callable[[dict[str, Any]], Any]:
        if self.kind in ("pod", "service", "node", "namespace", "endpointslice",
                         "networkpolicy"):
            return getattr(p, self.kind)
        kind = self.kind
        return lambda obj: p.owner(kind, obj)


def _r(kind: str, group: str, version: str, plural: str) -> Resource:
    base = "/api/v1" if not group else f"/apis/{group}/{version}"
    return Resource(kind, group, plural, f"{base}/{plural}")


RESOURCES: dict[str, Resource] = {r.kind: r for r in (
    _r("namespace", "", "v1", "namespaces"),
    _r("pod", "", "v1", "pods"),
    _r("service", "", "v1", "services"),
    _r("node", "", "v1", "nodes"),
    _r("endpointslice", "discovery.k8s.io", "v1", "endpointslices"),
    _r("replicaset", "apps", "v1", "replicasets"),
    _r("deployment", "apps", "v1", "deployments"),
    _r("statefulset", "apps", "v1", "statefulsets"),
    _r("daemonset", "apps", "v1", "daemonsets"),
    _r("job", "batch", "v1", "jobs"),
    _r("cronjob", "batch", "v1", "cronjobs"),
    _r("networkpolicy", "networking.k8s.io", "v1", "networkpolicies"),
)}


def resources_for(tags: frozenset[str], owner_depth: int, relation_kinds: set[str],
                  label_kinds: set[str]) -> list[Resource]:
    """The kinds needed by the configured association tags, owner walk and relations."""
    kinds = {"namespace", "pod", "networkpolicy"}
    if tags & {"cluster_ip", "external_ip", "lb_ip"} or "service" in relation_kinds \
            or "service" in label_kinds:
        kinds.add("service")
    if "node_ip" in tags or "host_ip" in tags:
        kinds.add("node")
    if "endpoint_ip" in tags:
        kinds.add("endpointslice")
    if owner_depth > 0:
        kinds |= {"replicaset", "deployment", "statefulset", "daemonset", "job", "cronjob"}
    kinds |= relation_kinds & set(RESOURCES)
    return [r for k, r in RESOURCES.items() if k in kinds]
