"""NetworkPolicy evaluation: which policies select an endpoint AND admit this flow.

Ingress: policies in the destination pod's namespace that include `Ingress` in their
policyTypes, select the destination pod, and have an ingress rule whose peers match the source
and whose ports match the destination port. Egress: the same from the source pod's side, peers
matched against the destination. Semantics follow networking.k8s.io/v1:

* policyTypes absent -> Ingress, plus Egress when the policy has egress rules;
* a rule without `from`/`to` admits every peer; without `ports`, every port and protocol;
* peer `ipBlock` (cidr minus `except`) matches any address, pods included;
* peer `podSelector` alone: pods in the policy's namespace; `namespaceSelector` alone: every pod
  in matching namespaces; both: pods matching both;
* port: protocol (default TCP), number with optional `endPort`, or a named port resolved on the
  destination pod's containers (for ingress the selected pod, for egress the peer pod);
* hostNetwork pods are neither selected nor matched by pod selectors (they use the node's IP).
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_address
from typing import Any

from mermin.enrich.k8s.projections import NetPolPeer, NetPolRule, NetworkPolicy, Pod
from mermin.enrich.k8s.store import ClusterState

__all__ = ["evaluate"]

_NONE: tuple[str, ...] = ()


@lru_cache(maxsize=65536)
def _addr(ip: str) -> Any:
    return ip_address(ip)


def evaluate(state: ClusterState, src_ip: str, src_pod: Pod | None, dst_ip: str,
             dst_pod: Pod | None, dst_port: int | None, proto: int
             ) -> tuple[list[str], list[str]]:
    """`(ingress, egress)` lists of "namespace/name" for this flow."""
    ingress: list[str] = []
    egress: list[str] = []
    if dst_pod is not None:
        for pol in state.policies_by_ns.get(dst_pod.namespace, _NONE):
            if "Ingress" in pol.types and pol.pod_selector.matches(dst_pod.labels) and _admits(
                    state, pol, pol.ingress, src_ip, src_pod, dst_pod, dst_port, proto):
                ingress.append(pol.key)
    if src_pod is not None:
        for pol in state.policies_by_ns.get(src_pod.namespace, _NONE):
            if "Egress" in pol.types and pol.pod_selector.matches(src_pod.labels) and _admits(
                    state, pol, pol.egress, dst_ip, dst_pod, dst_pod, dst_port, proto):
                egress.append(pol.key)
    return ingress, egress


def _admits(state: ClusterState, pol: NetworkPolicy, rules: tuple[NetPolRule, ...],
            peer_ip: str, peer_pod: Pod | None, port_pod: Pod | None, port: int | None,
            proto: int) -> bool:
    for rule in rules:
        if not _ports(rule, port_pod, port, proto):
            continue
        if rule.peers is None:
            return True
        for peer in rule.peers:
            if _peer(state, pol, peer, peer_ip, peer_pod):
                return True
    return False


def _ports(rule: NetPolRule, pod: Pod | None, port: int | None, proto: int) -> bool:
    if rule.ports is None:
        return True
    for p in rule.ports:
        if p.protocol != proto:
            continue
        if p.port is None:
            return True
        if port is None:
            continue
        if isinstance(p.port, str):
            named = pod.named_ports.get(p.port) if pod is not None and pod.named_ports else None
            if named is not None and named == (port, proto):
                return True
            if p.port.isdigit() and int(p.port) == port:
                return True
        elif p.port <= port <= (p.end_port or p.port):
            return True
    return False


def _peer(state: ClusterState, pol: NetworkPolicy, peer: NetPolPeer, ip: str,
          pod: Pod | None) -> bool:
    if peer.cidr is not None:
        addr = _addr(ip)
        if addr.version != peer.cidr.version or addr not in peer.cidr:
            return False
        return not any(addr.version == e.version and addr in e for e in peer.excepts)
    if pod is None:
        return False
    if peer.ns_selector is None:
        if pod.namespace != pol.namespace:
            return False
    else:
        ns = state.ns_by_name.get(pod.namespace)
        labels = dict(ns.labels) if ns is not None else {}
        labels.setdefault("kubernetes.io/metadata.name", pod.namespace)
        if not peer.ns_selector.matches(labels):
            return False
    return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)
