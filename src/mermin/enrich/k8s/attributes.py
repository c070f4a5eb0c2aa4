"""Attributes of one endpoint (one side of a flow), computed once per address and cached.

`Attributor.lookup(ip)` returns an `Entry`: the attributes of whatever owns the address
(`base`), per-port variants that add `container.name` (or name a hostNetwork pod by its
declared port), and the pod used for NetworkPolicy evaluation. Entries are cached per address
and dropped when the watchers mark the address dirty or bump the state's generation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mermin.config.k8s import K8sAttributes, MetadataExtraction, OwnerRelationsConfig
from mermin.enrich.k8s.ipindex import HOSTNET, Candidate
from mermin.enrich.k8s.projections import EndpointRef, EndpointSlice, Pod
from mermin.enrich.k8s.store import ClusterState

__all__ = ["EMPTY", "AttrMap", "Attributor", "Entry", "ExtractionRule"]

OWNER_KIND_NAMES = {"replicaset": "ReplicaSet", "deployment": "Deployment",
                    "statefulset": "StatefulSet", "daemonset": "DaemonSet", "job": "Job",
                    "cronjob": "CronJob"}
_REF = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _template(text: str) -> str:
    """Rust-style `$1` / `${name}` backreferences -> Python `\\g<1>` for Match.expand()."""
    return _REF.sub(lambda m: "\\g<" + (m.group(1) or m.group(2)) + ">",
                    text.replace("\\", "\\\\"))


class ExtractionRule:
    """A compiled `label {}` / `annotation {}` rule."""

    __slots__ = ("key", "key_re", "name", "value", "value_re")

    def __init__(self, rule: MetadataExtraction) -> None:
        self.key = rule.key
        self.key_re = re.compile(rule.key_regex) if rule.key_regex else None
        self.value_re = re.compile(rule.value_regex) if rule.value_regex else None
        self.name = _template(rule.attribute) if rule.attribute else ""
        self.value = _template(rule.attribute_value) if rule.attribute_value else ""

    def apply(self, mapping: Mapping[str, str] | None, prefix: str, out: dict[str, str]) -> None:
        """Add `prefix + name -> value` for every key of `mapping` this rule extracts."""
        if not mapping:
            return
        if self.key_re is None:
            value = mapping.get(self.key)
            if value is not None:
                self._emit(self.key, None, value, prefix, out)
            return
        for key, value in mapping.items():
            m = self.key_re.fullmatch(key)
            if m is not None:
                self._emit(key, m, value, prefix, out)

    def _emit(self, key: str, key_match: re.Match[str] | None, value: str, prefix: str,
              out: dict[str, str]) -> None:
        vm = None
        if self.value_re is not None:
            vm = self.value_re.search(value)
            if vm is None:
                return
        if self.name:
            name = key_match.expand(self.name) if key_match is not None else self.name
        else:
            name = key
        if self.value:
            value = vm.expand(self.value) if vm is not None else self.value
        if name:
            out[prefix + name] = value


class AttrMap(dict):  # type: ignore[type-arg]
    """A read-only dict: one cached instance is shared by every report of an endpoint (no copy
    per report). Reading is plain dict speed; changing it raises, copy it first (`dict(m)`)."""

    __slots__ = ()

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("Kubernetes attributes are shared between reports: copy before changing")

    __setitem__ = __delitem__ = _readonly  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = __ior__ = _readonly  # type: ignore[assignment]


def _freeze(attrs: dict[str, str]) -> AttrMap:
    return AttrMap(attrs)


@dataclass(slots=True)
class Entry:
    """Cached result for one address."""

    base: AttrMap | None  # attributes when the port does not matter / does not match
    by_port: dict[int, AttrMap] | None  # port -> attributes (container.name, hostNetwork)
    pod: Pod | None  # the non-hostNetwork pod owning the address (NetworkPolicy subject/peer)


EMPTY = Entry(None, None, None)


class Attributor:
    """Builds entries for one direction from the cluster state and the direction's settings."""

    def __init__(self, state: ClusterState, config: K8sAttributes,
                 owners: OwnerRelationsConfig) -> None:
        self.state = state
        self.tags = config.ip_tags()
        self.fields = config.extract.fields()
        self.owner_cfg = owners
        self.labels: dict[str, list[ExtractionRule]] = {}
        self.annotations: dict[str, list[ExtractionRule]] = {}
        for rule in config.extract.label:
            self.labels.setdefault(rule.from_, []).append(ExtractionRule(rule))
        for rule in config.extract.annotation:
            self.annotations.setdefault(rule.from_, []).append(ExtractionRule(rule))

    # -- resolution --------------------------------------------------------------------------
    def lookup(self, ip: str) -> Entry:
        """Resolve an address (no cache here; see K8sEnricher)."""
        cands = self.state.index.get(ip)
        if not cands:
            return EMPTY
        winner: Candidate | None = None
        hostnet: list[Candidate] = []
        for c in cands:
            if c.tag not in self.tags:
                continue
            if c.prio == HOSTNET:
                hostnet.append(c)
            elif winner is None:
                winner = c
        base = None
        by_port: dict[int, AttrMap] = {}
        pod = None
        if winner is not None:
            base = self._attrs(winner)
            if winner.kind == "pod":
                pod = winner.obj
                for port, container in (pod.ports or {}).items():
                    by_port[port] = _freeze({**base, "container.name": container})
        for c in hostnet:  # a hostNetwork pod claims its node's address for its own ports only
            attrs = None
            for port, container in (c.obj.ports or {}).items():
                if port not in by_port:
                    attrs = attrs if attrs is not None else self._pod(c.obj)
                    by_port[port] = _freeze({**attrs, "container.name": container})
        if not base and not by_port:
            return EMPTY
        return Entry(_freeze(base) if base else None, by_port or None, pod)

    def _attrs(self, c: Candidate) -> dict[str, str]:
        if c.kind == "pod":
            return self._pod(c.obj)
        if c.kind == "service":
            return self._simple("service", c.obj, namespaced=True)
        if c.kind == "node":
            return self._simple("node", c.obj, namespaced=False)
        slice_, ref = c.obj
        return self._endpoint(slice_, ref)

    # -- per kind ----------------------------------------------------------------------------
    def _meta(self, kind: str, obj: Any, out: dict[str, str], namespaced: bool) -> None:
        f = self.fields[kind]
        if "name" in f:
            out[f"{kind}.name"] = obj.name
        if "uid" in f:
            out[f"{kind}.uid"] = obj.uid
        if namespaced and "namespace" in f and obj.namespace:
            out["namespace.name"] = obj.namespace
        for rule in self.labels.get(kind, ()):
            rule.apply(obj.labels, f"{kind}.label.", out)
        for rule in self.annotations.get(kind, ()):
            rule.apply(obj.annotations, f"{kind}.annotation.", out)

    def _simple(self, kind: str, obj: Any, namespaced: bool) -> dict[str, str]:
        out: dict[str, str] = {}
        self._meta(kind, obj, out, namespaced)
        if namespaced:
            self._namespace(obj.namespace, out)
        return out

    def _namespace(self, name: str, out: dict[str, str]) -> None:
        if "namespace" in self.labels or "namespace" in self.annotations:
            ns = self.state.ns_by_name.get(name)
            if ns is not None:
                for rule in self.labels.get("namespace", ()):
                    rule.apply(ns.labels, "namespace.label.", out)
                for rule in self.annotations.get("namespace", ()):
                    rule.apply(ns.annotations, "namespace.annotation.", out)

    def _pod(self, pod: Pod) -> dict[str, str]:
        out: dict[str, str] = {}
        self._meta("pod", pod, out, namespaced=True)
        if "node_name" in self.fields["pod"] and pod.node:
            out["node.name"] = pod.node
        self._owners(pod, out)
        self._relations(pod, out)
        self._namespace(pod.namespace, out)
        return out

    def _owners(self, pod: Pod, out: dict[str, str]) -> None:
        cfg = self.owner_cfg
        frontier = pod.owners
        seen: set[str] = set()
        top: tuple[str, str] | None = None
        depth = 0
        while frontier and depth < cfg.max_depth and len(seen) < 32:
            depth += 1
            nxt: list[tuple[str, str, str]] = []
            for kind, name, uid in frontier:
                if uid in seen:
                    continue
                seen.add(uid)
                low = kind.lower()
                if cfg.emits(low):
                    top = (kind, name)
                    if low in OWNER_KIND_NAMES:
                        f = self.fields[low]
                        if "name" in f:
                            out[f"{low}.name"] = name
                        if "uid" in f:
                            out[f"{low}.uid"] = uid
                owner = self.state.owners.get(uid)
                if owner is not None:
                    nxt.extend(owner.owners)
                    for rule in self.labels.get(low, ()):
                        rule.apply(owner.labels, f"{low}.label.", out)
                    for rule in self.annotations.get(low, ()):
                        rule.apply(owner.annotations, f"{low}.annotation.", out)
            frontier = tuple(nxt)
        if top is not None:
            out["owner.name"] = top[1]
            out["owner.type"] = OWNER_KIND_NAMES.get(top[0].lower(), top[0])

    def _relations(self, pod: Pod, out: dict[str, str]) -> None:
        for kind, by_ns in self.state.relations.items():
            if kind == "networkpolicy":
                continue  # policies have their own attributes (network.policies.*)
            names = sorted(o.name for o in by_ns.get(pod.namespace, {}).values()
                           if o.selector.matches(pod.labels))
            if names:
                out.setdefault(f"{kind}.name", ",".join(names))

    def _endpoint(self, slice_: EndpointSlice, ref: EndpointRef) -> dict[str, str]:
        out: dict[str, str] = {}
        f = self.fields["endpointslice"]
        if "namespace" in f and slice_.namespace:
            out["namespace.name"] = slice_.namespace
        if slice_.service:
            out["service.name"] = slice_.service
        if ref.target_kind == "pod" and ref.target_name:
            out["pod.name"] = ref.target_name
            if "uid" in self.fields["pod"] and ref.target_uid:
                out["pod.uid"] = ref.target_uid
        return out
