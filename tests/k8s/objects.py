"""Builders of Kubernetes API objects (plain JSON dicts, as the API server sends them)."""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["endpointslice", "namespace", "netpol", "node", "owner", "pod", "service"]


def _meta(name: str, namespace: str | None = None, labels: dict[str, str] | None = None,
          annotations: dict[str, str] | None = None,
          owners: list[dict[str, Any]] | None = None, uid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid or str(uuid.uuid4())}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owners:
        meta["ownerReferences"] = owners
    return meta


def ref(obj: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference (controller) to `obj`."""
    return {"apiVersion": obj.get("apiVersion", "apps/v1"), "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"], "controller": True}


def pod(name: str, ns: str = "default", ips: list[str] | None = None, node: str = "node-1",
        labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        owner: dict[str, Any] | None = None, host_network: bool = False,
        host_ip: str = "", ports: list[tuple[str, int, str]] | None = None,
        container: str = "app", phase: str = "Running", deleting: bool = False,
        uid: str | None = None) -> dict[str, Any]:
    """A pod; `ports` = [(name, containerPort, protocol)]; hostNetwork pods get hostPort too."""
    ips = list(ips or [])
    if host_network and host_ip:
        ips = [host_ip]
    cports = []
    for pname, num, proto in ports or []:
        p = {"name": pname, "containerPort": num, "protocol": proto}
        if host_network:
            p["hostPort"] = num
        cports.append(p)
    obj = {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": _meta(name, ns, labels, annotations, [ref(owner)] if owner else None, uid),
        "spec": {"nodeName": node, "hostNetwork": host_network,
                 "containers": [{"name": container, "image": "x", "ports": cports}]},
        "status": {"phase": phase, "podIP": ips[0] if ips else None,
                   "podIPs": [{"ip": i} for i in ips],
                   "hostIP": host_ip or None, "hostIPs": [{"ip": host_ip}] if host_ip else []},
    }
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return obj


def service(name: str, ns: str = "default", cluster_ips: list[str] | None = None,
            external_ips: list[str] | None = None, lb_ips: list[str] | None = None,
            selector: dict[str, str] | None = None,
            labels: dict[str, str] | None = None) -> dict[str, Any]:
    cips = cluster_ips or []
    spec: dict[str, Any] = {"clusterIP": cips[0] if cips else "None", "clusterIPs": cips,
                            "ports": [{"port": 80, "protocol": "TCP"}]}
    if external_ips:
        spec["externalIPs"] = external_ips
    if selector:
        spec["selector"] = selector
    status = {"loadBalancer": {"ingress": [{"ip": i} for i in lb_ips or []]}}
    return {"kind": "Service", "apiVersion": "v1", "metadata": _meta(name, ns, labels),
            "spec": spec, "status": status}


def node(name: str, internal: list[str], external: list[str] | None = None,
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    addrs = [{"type": "InternalIP", "address": a} for a in internal]
    addrs += [{"type": "ExternalIP", "address": a} for a in external or []]
    addrs.append({"type": "Hostname", "address": name})
    return {"kind": "Node", "apiVersion": "v1", "metadata": _meta(name, None, labels),
            "status": {"addresses": addrs}}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/metadata.name": name, **(labels or {})}
    return {"kind": "Namespace", "apiVersion": "v1", "metadata": _meta(name, None, labels)}


def owner(kind: str, name: str, ns: str = "default", parent: dict[str, Any] | None = None,
          match_labels: dict[str, str] | None = None,
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    """ReplicaSet/Deployment/StatefulSet/DaemonSet (apps/v1) or Job/CronJob (batch/v1)."""
    api = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
    spec: dict[str, Any] = {}
    if match_labels:
        spec["selector"] = {"matchLabels": match_labels}
    return {"kind": kind, "apiVersion": api,
            "metadata": _meta(name, ns, labels, None, [ref(parent)] if parent else None),
            "spec": spec}


def endpointslice(name: str, ns: str, service_name: str,
                  endpoints: list[tuple[list[str], dict[str, Any] | None]]) -> dict[str, Any]:
    """`endpoints` = [(addresses, target pod object or None)]."""
    eps = []
    for addrs, target in endpoints:
        ep: dict[str, Any] = {"addresses": addrs, "conditions": {"ready": True}}
        if target is not None:
            ep["targetRef"] = {"kind": "Pod", "name": target["metadata"]["name"],
                               "namespace": target["metadata"]["namespace"],
                               "uid": target["metadata"]["uid"]}
        eps.append(ep)
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": _meta(name, ns, {"kubernetes.io/service-name": service_name}),
            "addressType": "IPv4", "endpoints": eps, "ports": [{"port": 80}]}


def netpol(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
            "metadata": _meta(name, ns), "spec": spec}
