"""Compact projections of Kubernetes objects: only what attribution and policies need.

The informers parse each object's JSON into a dict and hand it to `Projector`, which keeps a few
fields in a slots dataclass and drops the rest (a full V1Pod model is ~50x larger and slow to
build). Labels are kept for pods and namespaces (selectors, policies, extraction) and for other
kinds only when a rule needs them; annotations only for the keys a rule can match.

Projections are immutable once built: a MODIFIED event builds a new one, so a projection's
identity can key caches (see policies.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import ip_network
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import Any

from mermin.config.k8s import AttributesConfig, InformerConfig, MetadataExtraction
from mermin.enrich.k8s.selectors import LabelSelector

__all__ = [
    "PROTOCOLS",
    "EndpointRef",
    "EndpointSlice",
    "Namespace",
    "NetPolPeer",
    "NetPolPort",
    "NetPolRule",
    "NetworkPolicy",
    "Node",
    "Owner",
    "Pod",
    "Projector",
    "Service",
]

PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
_intern = sys.intern
_NO_LABELS: dict[str, str] = {}


class _Proj:
    """Shared helpers: `same()` compares every field (change detection of MODIFIED events)."""

    __slots__ = ()

    def same(self, other: object) -> bool:
        if type(other) is not type(self):
            return False
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)


@dataclass(slots=True, eq=False)
class Pod(_Proj):
    uid: str
    name: str
    namespace: str
    node: str
    ips: tuple[str, ...]  # every podIPs entry (v4 and v6)
    host_network: bool
    host_ips: tuple[str, ...]
    labels: dict[str, str]
    annotations: dict[str, str] | None
    owners: tuple[tuple[str, str, str], ...]  # (Kind as written, name, uid)
    ports: dict[int, str] | None  # containerPort/hostPort -> container name
    named_ports: dict[str, tuple[int, int]] | None  # port name -> (number, protocol)
    terminating: bool  # deletionTimestamp set
    finished: bool  # phase Succeeded/Failed: the IP is released


@dataclass(slots=True, eq=False)
class Service(_Proj):
    uid: str
    name: str
    namespace: str
    ips: tuple[tuple[str, str], ...]  # (ip, tag)
    labels: dict[str, str] | None
    annotations: dict[str, str] | None
    selector: LabelSelector | None  # for selector relations


@dataclass(slots=True, eq=False)
class Node(_Proj):
    uid: str
    name: str
    ips: tuple[str, ...]  # InternalIP / ExternalIP addresses
    labels: dict[str, str] | None
    annotations: dict[str, str] | None


@dataclass(slots=True, eq=False)
class Namespace(_Proj):
    uid: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str] | None


@dataclass(slots=True, eq=False)
class Owner(_Proj):
    """ReplicaSet, Deployment, StatefulSet, DaemonSet, Job or CronJob."""

    uid: str
    name: str
    namespace: str
    kind: str  # lowercase
    owners: tuple[tuple[str, str, str], ...]
    labels: dict[str, str] | None
    annotations: dict[str, str] | None
    selector: LabelSelector | None


@dataclass(slots=True, eq=False)
class EndpointRef(_Proj):
    ip: str
    target_kind: str  # "pod" or "" (no targetRef)
    target_namespace: str
    target_name: str
    target_uid: str


@dataclass(slots=True, eq=False)
class EndpointSlice(_Proj):
    uid: str
    name: str
    namespace: str
    service: str  # kubernetes.io/service-name label
    endpoints: tuple[EndpointRef, ...]


@dataclass(slots=True, eq=False)
class NetPolPeer(_Proj):
    """One `from`/`to` entry: ipBlock, or podSelector and/or namespaceSelector."""

    cidr: Any  # ipaddress network or None
    excepts: tuple[Any, ...]
    pod_selector: LabelSelector | None
    ns_selector: LabelSelector | None


@dataclass(slots=True, eq=False)
class NetPolPort(_Proj):
    protocol: int
    port: int | str | None  # None: every port of the protocol
    end_port: int | None


@dataclass(slots=True, eq=False)
class NetPolRule(_Proj):
    peers: tuple[NetPolPeer, ...] | None  # None: every peer
    ports: tuple[NetPolPort, ...] | None  # None: every port and protocol


@dataclass(slots=True, eq=False)
class NetworkPolicy(_Proj):
    uid: str
    name: str
    namespace: str
    pod_selector: LabelSelector
    ingress: tuple[NetPolRule, ...]
    egress: tuple[NetPolRule, ...]
    types: frozenset[str]  # {"Ingress", "Egress"}

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _dig(obj: Any, path: str) -> Any:
    """Follow a dotted path (`spec.selector.matchLabels`) through nested dicts."""
    for part in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _owners(meta: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    refs = meta.get("ownerReferences") or ()
    return tuple((_intern(str(r.get("kind", ""))), r.get("name", ""), r.get("uid", ""))
                 for r in refs)


@lru_cache(maxsize=131072)
def _canonical_ip(value: str) -> str | None:
    family = AF_INET6 if ":" in value else AF_INET
    try:
        return inet_ntop(family, inet_pton(family, value))
    except (OSError, ValueError):
        return None


def _valid_ip(value: Any) -> str | None:
    """The address in canonical text form (as flow reports print it), or None if invalid."""
    if not value or not isinstance(value, str):
        return None
    return _canonical_ip(value)


def _selected(rules: list[tuple[frozenset[str], LabelSelector]], namespace: str,
              labels: Mapping[str, str]) -> bool:
    """InformerConfig.selectors of one kind: any rule (namespaces AND labels) keeps the object."""
    for namespaces, selector in rules:
        if namespaces and namespace not in namespaces:
            continue
        if selector.matches(labels):
            return True
    return False


class Projector:
    """Builds projections from API JSON, keeping only the configured labels/annotations."""

    def __init__(self, informer: InformerConfig, attributes: AttributesConfig) -> None:
        self._rules = {}
        for sel in informer.selectors:
            rule = (frozenset(sel.namespaces),
                    LabelSelector.from_parts(sel.match_labels, sel.match_expressions))
            self._rules.setdefault(sel.kind, []).append(rule)
        label_rules: list[MetadataExtraction] = []
        annotation_rules: list[MetadataExtraction] = []
        for direction in ("source", "destination"):
            k8s = attributes.k8s(direction)
            if k8s is not None:
                label_rules += k8s.extract.label
                annotation_rules += k8s.extract.annotation
        self._label_kinds = {r.from_ for r in label_rules}
        self._annotation_rules: dict[str, list[MetadataExtraction]] = {}
        for r in annotation_rules:
            self._annotation_rules.setdefault(r.from_, []).append(r)
        self._relations = {rel.kind: rel for rel in informer.selector_relations}
        self._shared: dict[Any, Any] = {}

    def _share(self, value: Any) -> Any:
        """One instance per distinct value (pods of one ReplicaSet have equal labels, ports and
        owner references): saves most of their memory. Bounded: reset when it grows large."""
        if not value:
            return value
        key = (type(value), tuple(value.items()) if isinstance(value, dict) else value)
        hit = self._shared.get(key)
        if hit is None:
            if len(self._shared) > 100_000:
                self._shared.clear()
            self._shared[key] = hit = value
        return hit

    # -- helpers -----------------------------------------------------------------------------
    def _keep(self, kind: str, meta: Mapping[str, Any]) -> bool:
        rules = self._rules.get(kind)
        if not rules:
            return True
        return _selected(rules, meta.get("namespace", ""), meta.get("labels") or _NO_LABELS)

    def _labels(self, kind: str, meta: Mapping[str, Any]) -> dict[str, str] | None:
        if kind not in self._label_kinds:
            return None
        return meta.get("labels") or _NO_LABELS

    def _annotations(self, kind: str, meta: Mapping[str, Any]) -> dict[str, str] | None:
        rules = self._annotation_rules.get(kind)
        if not rules:
            return None
        raw = meta.get("annotations") or {}
        kept = {}
        for key, value in raw.items():
            for r in rules:
                if (r.key and r.key == key) or (r.key_regex and _fullmatch(r.key_regex, key)):
                    kept[key] = value
                    break
        return kept

    def _selector(self, kind: str, obj: Mapping[str, Any]) -> LabelSelector | None:
        rel = self._relations.get(kind)
        if rel is None:
            return None
        labels = _dig(obj, rel.selector_match_labels_field) if rel.selector_match_labels_field \
            else None
        exprs = _dig(obj, rel.selector_match_expressions_field) \
            if rel.selector_match_expressions_field else None
        if not labels and not exprs:
            return None  # a missing selector selects nothing (a Service without selector)
        return LabelSelector.from_spec({"matchLabels": labels, "matchExpressions": exprs})

    # -- kinds -------------------------------------------------------------------------------
    def pod(self, obj: Mapping[str, Any]) -> Pod | None:
        meta = _meta(obj)
        if not self._keep("pod", meta):
            return None
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        ips = [e.get("ip") for e in status.get("podIPs") or ()]
        if not ips and status.get("podIP"):
            ips = [status["podIP"]]
        host_ips = [e.get("ip") for e in status.get("hostIPs") or ()]
        if not host_ips and status.get("hostIP"):
            host_ips = [status["hostIP"]]
        ports: dict[int, str] = {}
        named: dict[str, tuple[int, int]] = {}
        for c in spec.get("containers") or ():
            cname = c.get("name", "")
            for p in c.get("ports") or ():
                num = p.get("containerPort")
                if isinstance(num, int):
                    ports.setdefault(num, cname)
                    if p.get("name"):
                        named.setdefault(p["name"], (num, PROTOCOLS.get(p.get("protocol",
                                                                             "TCP"), 6)))
                host = p.get("hostPort")
                if isinstance(host, int):
                    ports.setdefault(host, cname)
        return Pod(
            uid=meta.get("uid", ""),
            name=meta.get("name", ""),
            namespace=_intern(meta.get("namespace", "")),
            node=_intern(spec.get("nodeName") or ""),
            ips=tuple(ip for ip in map(_valid_ip, ips) if ip),
            host_network=bool(spec.get("hostNetwork")),
            host_ips=tuple(ip for ip in map(_valid_ip, host_ips) if ip),
            labels=self._share(meta.get("labels")) or _NO_LABELS,
            annotations=self._annotations("pod", meta),
            owners=self._share(_owners(meta)),
            ports=self._share(ports) or None,
            named_ports=self._share(named) or None,
            terminating=bool(meta.get("deletionTimestamp")),
            finished=status.get("phase") in ("Succeeded", "Failed"),
        )

    def service(self, obj: Mapping[str, Any]) -> Service | None:
        meta = _meta(obj)
        if not self._keep("service", meta):
            return None
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        ips: dict[str, str] = {}
        for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or ())]:
            ips.setdefault(ip, "cluster_ip")
        for ip in spec.get("externalIPs") or ():
            ips.setdefault(ip, "external_ip")
        lb = [spec.get("loadBalancerIP")]
        lb += [i.get("ip") for i in (status.get("loadBalancer") or {}).get("ingress") or ()]
        for ip in lb:
            ips.setdefault(ip, "lb_ip")
        pairs = tuple((v, tag) for ip, tag in ips.items() if (v := _valid_ip(ip)))
        return Service(
            uid=meta.get("uid", ""), name=meta.get("name", ""),
            namespace=_intern(meta.get("namespace", "")), ips=pairs,
            labels=self._labels("service", meta), annotations=self._annotations("service", meta),
            selector=self._selector("service", obj),
        )

    def node(self, obj: Mapping[str, Any]) -> Node | None:
        meta = _meta(obj)
        if not self._keep("node", meta):
            return None
        addrs = (obj.get("status") or {}).get("addresses") or ()
        ips = tuple(dict.fromkeys(
            ip for a in addrs if a.get("type") in ("InternalIP", "ExternalIP")
            and (ip := _valid_ip(a.get("address")))))
        return Node(uid=meta.get("uid", ""), name=_intern(meta.get("name", "")), ips=ips,
                    labels=self._labels("node", meta), annotations=self._annotations("node", meta))

    def namespace(self, obj: Mapping[str, Any]) -> Namespace | None:
        meta = _meta(obj)
        return Namespace(uid=meta.get("uid", ""), name=_intern(meta.get("name", "")),
                         labels=meta.get("labels") or _NO_LABELS,
                         annotations=self._annotations("namespace", meta))

    def owner(self, kind: str, obj: Mapping[str, Any]) -> Owner | None:
        meta = _meta(obj)
        if not self._keep(kind, meta):
            return None
        return Owner(uid=meta.get("uid", ""), name=meta.get("name", ""),
                     namespace=_intern(meta.get("namespace", "")), kind=kind,
                     owners=_owners(meta), labels=self._labels(kind, meta),
                     annotations=self._annotations(kind, meta), selector=self._selector(kind, obj))

    def endpointslice(self, obj: Mapping[str, Any]) -> EndpointSlice | None:
        meta = _meta(obj)
        if not self._keep("endpointslice", meta):
            return None
        refs = []
        for ep in obj.get("endpoints") or ():
            target = ep.get("targetRef") or {}
            kind = "pod" if target.get("kind") == "Pod" else ""
            for addr in ep.get("addresses") or ():
                ip = _valid_ip(addr)
                if ip:
                    refs.append(EndpointRef(ip, kind, target.get("namespace", "") if kind else "",
                                            target.get("name", "") if kind else "",
                                            target.get("uid", "") if kind else ""))
        labels = meta.get("labels") or {}
        return EndpointSlice(uid=meta.get("uid", ""), name=meta.get("name", ""),
                             namespace=_intern(meta.get("namespace", "")),
                             service=labels.get("kubernetes.io/service-name", ""),
                             endpoints=tuple(refs))

    def networkpolicy(self, obj: Mapping[str, Any]) -> NetworkPolicy | None:
        meta = _meta(obj)
        spec = obj.get("spec") or {}
        ingress = tuple(_rule(r, "from") for r in spec.get("ingress") or ())
        egress = tuple(_rule(r, "to") for r in spec.get("egress") or ())
        types = spec.get("policyTypes")
        if not types:  # API default: Ingress always, Egress when egress rules exist
            types = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
        return NetworkPolicy(uid=meta.get("uid", ""), name=meta.get("name", ""),
                             namespace=_intern(meta.get("namespace", "")),
                             pod_selector=LabelSelector.from_spec(spec.get("podSelector")),
                             ingress=ingress, egress=egress, types=frozenset(types))


def _fullmatch(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def _rule(rule: Mapping[str, Any], peers_key: str) -> NetPolRule:
    peers_raw = rule.get(peers_key)
    peers = None
    if peers_raw:  # absent or empty list: every peer
        peers = tuple(_peer(p) for p in peers_raw)
    ports_raw = rule.get("ports")
    ports = None
    if ports_raw:
        ports = tuple(NetPolPort(PROTOCOLS.get(p.get("protocol") or "TCP", 6), p.get("port"),
                                 p.get("endPort")) for p in ports_raw)
    return NetPolRule(peers, ports)


def _peer(peer: Mapping[str, Any]) -> NetPolPeer:
    block = peer.get("ipBlock")
    if block:
        try:
            cidr = ip_network(block.get("cidr", ""), strict=False)
            excepts = tuple(ip_network(e, strict=False) for e in block.get("except") or ())
        except ValueError:
            cidr, excepts = None, ()
        if cidr is None:  # an unparsable block matches nothing
            return NetPolPeer(None, (), None, LabelSelector({"\0never": "\0"}))
        return NetPolPeer(cidr, excepts, None, None)
    pod_sel = peer.get("podSelector")
    ns_sel = peer.get("namespaceSelector")
    return NetPolPeer(None, (),
                      LabelSelector.from_spec(pod_sel) if pod_sel is not None else None,
                      LabelSelector.from_spec(ns_sel) if ns_sel is not None else None)
