"""Kubernetes enrichment settings: `discovery "informer" "k8s" {}` and the `attributes` block.

HCL shape (keys and defaults follow the original Mermin, inventory §4-§5.7):

    discovery "informer" "k8s" {
      kubeconfig_path        = ""      # empty: in-cluster service account, else $KUBECONFIG/~/.kube
      informers_sync_timeout = "30s"
      selectors       = [{ kind = "Pod", namespaces = ["prod"], match_labels = { app = "x" } }]
      owner_relations = { max_depth = 5, include_kinds = [], exclude_kinds = [] }
      selector_relations = [
        { kind = "Service", to = "Pod", selector_match_labels_field = "spec.selector" },
      ]
      deleted_pod_grace = "30s"        # new: deleted pods keep their name this long
      static_inventory  = ""           # new: IP/CIDR -> attributes file for non-Kubernetes hosts
    }

    attributes "source" "k8s" {
      extract {
        metadata   = ["[*].metadata.name", "[*].metadata.namespace", "[*].metadata.uid"]
        label      { from = "pod", key = "app" }                      # -> pod.label.app
        annotation { from = "pod", key_regex = "example.com/(.*)", attribute = "$1" }
      }
      association { pod = { sources = [{ from = "source.ip", to = ["status.podIP"] }] } }
    }
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mermin.config.base import Duration, StrictModel

__all__ = [
    "ASSOCIATION_PATHS",
    "METADATA_KINDS",
    "OWNER_KINDS",
    "AssociationConfig",
    "AssociationSource",
    "AttributesConfig",
    "DirectionAttributes",
    "ExtractConfig",
    "InformerConfig",
    "K8sAttributes",
    "MetadataExtraction",
    "OwnerRelationsConfig",
    "ResourceSelector",
    "SelectorRelation",
    "SelectorRequirement",
]

OWNER_KINDS = ("replicaset", "deployment", "statefulset", "daemonset", "job", "cronjob")
"""Owner kinds the owner walk understands (lowercase)."""

METADATA_KINDS = ("pod", "service", "node", "namespace", "endpointslice", *OWNER_KINDS)
"""Kinds that `extract` rules may name (lowercase)."""

_METADATA_FIELDS = ("name", "namespace", "uid", "node_name")

ASSOCIATION_PATHS: dict[str, dict[str, str]] = {
    "pod": {
        "status.podIP": "pod_ip",
        "status.podIPs[*]": "pod_ip",
        "status.podIPs[*].ip": "pod_ip",
        "status.hostIP": "host_ip",
        "status.hostIPs[*]": "host_ip",
        "status.hostIPs[*].ip": "host_ip",
    },
    "service": {
        "spec.clusterIP": "cluster_ip",
        "spec.clusterIPs[*]": "cluster_ip",
        "spec.externalIPs[*]": "external_ip",
        "spec.loadBalancerIP": "lb_ip",
        "status.loadBalancer.ingress[*].ip": "lb_ip",
    },
    "node": {"status.addresses[*].address": "node_ip"},
    "endpointslice": {"endpoints[*].addresses[*]": "endpoint_ip"},
    "endpoint": {"endpoints[*].addresses[*]": "endpoint_ip", "subsets[*].addresses[*].ip":
                 "endpoint_ip"},
}
"""Address paths honoured per association kind, mapped to the index tag they enable. Other
paths (ports, protocols, hostnames, ingress/gateway kinds) are accepted and ignored, as in the
original; the port is always used for the container name and hostNetwork pods."""

_KIND_ALIASES = {"daemonset": "daemonset", "endpoints": "endpoint", "endpointslices":
                 "endpointslice"}


def _lower_kind(value: str) -> str:
    kind = value.strip().lower()
    return _KIND_ALIASES.get(kind, kind)


class SelectorRequirement(StrictModel):
    """One label-selector expression (`matchExpressions` entry)."""

    key: str = Field(description="Label key the expression tests.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In/NotIn compare against `values`; Exists/DoesNotExist test the key only.")
    values: list[str] = Field(default_factory=list, description="Values for In/NotIn.")


class ResourceSelector(StrictModel):
    """Restricts which objects of one kind are used for attribution (all rules of a kind OR)."""

    kind: str = Field(description="Kubernetes kind, case-insensitive (Pod, Service, Node, ...).")
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to keep; empty keeps every namespace.")
    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels an object must carry (AND).")
    match_expressions: list[SelectorRequirement] = Field(
        default_factory=list, description="Label expressions an object must satisfy (AND).")

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        return _lower_kind(value)


class OwnerRelationsConfig(StrictModel):
    """How far the ownerReferences walk goes and which owner kinds become attributes."""

    max_depth: int = Field(
        default=5, ge=0, le=32,
        description="Owner levels walked above the pod (1 = direct owner only; 0 = no owners).")
    include_kinds: list[str] = Field(
        default_factory=list,
        description="Owner kinds to emit (case-insensitive); empty emits every supported kind.")
    exclude_kinds: list[str] = Field(
        default_factory=list, description="Owner kinds never emitted; wins over include_kinds.")

    @field_validator("include_kinds", "exclude_kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        return [_lower_kind(v) for v in value]

    def emits(self, kind: str) -> bool:
        """Whether an owner of this (lowercase) kind becomes attributes."""
        if kind in self.exclude_kinds:
            return False
        return not self.include_kinds or kind in self.include_kinds


class SelectorRelation(StrictModel):
    """Objects of `kind` whose label selector matches a pod add `<kind>.name` to that pod."""

    kind: str = Field(description="Selecting kind: Service, Deployment, ReplicaSet, "
                                  "StatefulSet, DaemonSet, Job, CronJob or NetworkPolicy.")
    to: str = Field(default="Pod", description="Selected kind; only Pod is supported.")
    selector_match_labels_field: str = Field(
        default="", description="Dotted path of the matchLabels map in the selecting object.")
    selector_match_expressions_field: str = Field(
        default="", description="Dotted path of the matchExpressions list (optional).")

    @field_validator("kind", "to")
    @classmethod
    def _kind(cls, value: str) -> str:
        return _lower_kind(value)

    @model_validator(mode="after")
    def _check(self) -> SelectorRelation:
        supported = ("service", "networkpolicy", *OWNER_KINDS)
        if self.kind not in supported:
            raise ValueError(f"selector_relations kind {self.kind!r} is not supported; "
                             f"use one of {', '.join(supported)}")
        if self.to != "pod":
            raise ValueError("selector_relations `to` must be \"Pod\"")
        return self


class InformerConfig(StrictModel):
    """`discovery "informer" "k8s" {}`: how the agent watches the cluster."""

    kubeconfig_path: str = Field(
        default="",
        description="Kubeconfig file to use. Empty: the in-cluster service account when running "
                    "in a pod, else $KUBECONFIG or ~/.kube/config (exec and token credentials "
                    "are supported).")
    informers_sync_timeout: Duration = Field(
        default=30.0,
        description="How long startup waits for the initial list of every watched kind. After "
                    "it the agent exports undecorated reports, keeps syncing, and decorates once "
                    "synced (readiness follows).")
    selectors: list[ResourceSelector] = Field(
        default_factory=list,
        description="Per-kind filters of the objects used for attribution. A kind without a rule "
                    "uses all its objects (unlike the original's whitelist, Nodes are on).")
    owner_relations: OwnerRelationsConfig = Field(
        default_factory=OwnerRelationsConfig,
        description="Owner walk: max_depth, include_kinds, exclude_kinds.")
    selector_relations: list[SelectorRelation] = Field(
        default_factory=list,
        description="Selector relations (e.g. Service -> Pod); empty disables them.")
    deleted_pod_grace: Duration = Field(
        default=30.0,
        description="A deleted (or terminating) pod keeps its name for late reports of its flows "
                    "this long, unless another pod takes its IP, which wins at once.")
    page_size: int = Field(
        default=500, ge=1, le=10000, description="Objects per page of the initial list calls.")
    watch_timeout: Duration = Field(
        default=300.0,
        description="Server-side timeout of one watch request; the watch is resumed from the "
                    "last resourceVersion after it, without a relist.")
    static_inventory: str = Field(
        default="",
        description="YAML/JSON file mapping IPs/CIDRs to attributes for hosts outside "
                    "Kubernetes (longest prefix wins); used where the cluster gives no name, "
                    "or alone when no cluster is reachable.")

    def selectors_for(self, kind: str) -> list[ResourceSelector]:
        """The selector rules of one (lowercase) kind."""
        return [s for s in self.selectors if s.kind == kind]


class MetadataExtraction(StrictModel):
    """One `label {}` or `annotation {}` extraction rule (original's documented syntax)."""

    from_: str = Field(default="pod", alias="from",
                       description="Kind whose labels/annotations are read (case-insensitive).")
    key: str = Field(default="", description="Exact key to extract; exclusive with key_regex.")
    key_regex: str | None = Field(
        default=None,
        description="Regex the whole key must match; capture groups feed `attribute`.")
    value_regex: str | None = Field(
        default=None,
        description="Regex searched in the value; no match skips it. Groups feed "
                    "`attribute_value`.")
    attribute: str = Field(
        default="",
        description="Attribute name after `<kind>.label.` / `<kind>.annotation.`; `$1`/`${name}` "
                    "expand key_regex groups. Empty: the key itself.")
    attribute_value: str | None = Field(
        default=None,
        description="Value to set; `$1` expands value_regex groups. Empty: the whole value.")

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        kind = _lower_kind(value)
        if kind not in METADATA_KINDS:
            raise ValueError(f"cannot extract from kind {value!r}; use one of "
                             f"{', '.join(METADATA_KINDS)}")
        return kind

    @model_validator(mode="after")
    def _check(self) -> MetadataExtraction:
        if bool(self.key) == bool(self.key_regex):
            raise ValueError("set exactly one of `key` or `key_regex`")
        for pattern in (self.key_regex, self.value_regex):
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
        return self


def _as_list(value: Any) -> Any:
    """HCL gives one block as a dict and repeated blocks as a list; accept both."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return value


class ExtractConfig(StrictModel):
    """`extract {}`: which metadata becomes attributes."""

    metadata: list[str] = Field(
        default_factory=lambda: ["[*].metadata.name", "[*].metadata.namespace",
                                 "[*].metadata.uid", "pod.metadata.node_name"],
        description="`[*].metadata.<field>` (every kind) or `<kind>.metadata.<field>`; fields "
                    "name, namespace, uid, and pod.metadata.node_name (-> node.name).")
    label: list[MetadataExtraction] = Field(
        default_factory=list, description="Label extraction rules (none by default).")
    annotation: list[MetadataExtraction] = Field(
        default_factory=list, description="Annotation extraction rules (none by default).")

    _wrap = field_validator("label", "annotation", mode="before")(
        lambda cls, v: _as_list(v))

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_metadata_path(item)
        return value

    def fields(self) -> dict[str, frozenset[str]]:
        """Kind -> metadata fields to emit, from the `metadata` list."""
        out: dict[str, set[str]] = {k: set() for k in METADATA_KINDS}
        for item in self.metadata:
            kind, fld = parse_metadata_path(item)
            for k in (METADATA_KINDS if kind == "*" else (kind,)):
                out[k].add(fld)
        return {k: frozenset(v) for k, v in out.items()}


def parse_metadata_path(path: str) -> tuple[str, str]:
    """`"[*].metadata.name"` -> ("*", "name"); `"pod.metadata.uid"` -> ("pod", "uid")."""
    parts = path.strip().split(".")
    if len(parts) != 3 or parts[1] != "metadata":
        raise ValueError(f"extract path {path!r} must look like '[*].metadata.name' or "
                         "'pod.metadata.uid'")
    kind = "*" if parts[0] == "[*]" else _lower_kind(parts[0])
    if kind != "*" and kind not in METADATA_KINDS:
        raise ValueError(f"extract path {path!r}: unknown kind; use [*] or one of "
                         f"{', '.join(METADATA_KINDS)}")
    field = parts[2]
    if field not in _METADATA_FIELDS:
        raise ValueError(f"extract path {path!r}: field must be one of "
                         f"{', '.join(_METADATA_FIELDS)}")
    return kind, field


class AssociationSource(StrictModel):
    """One `{ from = "source.ip", to = [paths] }` mapping."""

    from_: str = Field(alias="from", description="Flow field: source.ip / destination.ip "
                                                 "(others are accepted and ignored).")
    to: list[str] = Field(default_factory=list, description="Object paths (see docs).")

    model_config = StrictModel.model_config | {"populate_by_name": True}


class AssociationConfig(StrictModel):
    """`<kind> = { sources = [...] }` inside `association {}`."""

    sources: list[AssociationSource] = Field(default_factory=list,
                                             description="Flow field -> object path mappings.")


def _default_association() -> dict[str, AssociationConfig]:
    def ip(paths: list[str]) -> AssociationConfig:
        return AssociationConfig(sources=[AssociationSource(**{"from": "ip", "to": paths})])

    return {
        "pod": ip(["status.podIP", "status.podIPs[*]", "status.hostIP", "status.hostIPs[*]"]),
        "service": ip(["spec.clusterIP", "spec.clusterIPs[*]", "spec.externalIPs[*]",
                       "spec.loadBalancerIP", "status.loadBalancer.ingress[*].ip"]),
        "node": ip(["status.addresses[*].address"]),
        "endpointslice": ip(["endpoints[*].addresses[*]"]),
    }


class K8sAttributes(StrictModel):
    """`attributes "<direction>" "k8s" {}`."""

    extract: ExtractConfig = Field(default_factory=ExtractConfig,
                                   description="Metadata, labels and annotations to emit.")
    association: dict[str, AssociationConfig] = Field(
        default_factory=_default_association,
        description="Kind -> address paths used to find the object of an IP.")

    @field_validator("association", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {_lower_kind(k): v for k, v in value.items()}
        return value

    def ip_tags(self) -> frozenset[str]:
        """Index tags (see ASSOCIATION_PATHS) this direction's association enables."""
        tags: set[str] = set()
        for kind, assoc in self.association.items():
            paths = ASSOCIATION_PATHS.get(kind, {})
            for src in assoc.sources:
                if not src.from_.endswith("ip"):
                    continue
                for path in src.to:
                    tag = paths.get(path.strip().removeprefix("$."))
                    if tag:
                        tags.add(tag)
        return frozenset(tags)


class DirectionAttributes(StrictModel):
    """`attributes "<direction>" { "k8s" {...} }`: providers of one direction."""

    k8s: K8sAttributes | None = Field(default_factory=K8sAttributes,
                                      description="Kubernetes attribution of this endpoint.")


class AttributesConfig(StrictModel):
    """The whole `attributes` block. Absent: both directions use the defaults; present but
    empty (`attributes {}`): attribution off; one direction only: the other is off."""

    source: DirectionAttributes | None = Field(
        default_factory=DirectionAttributes, description="Attribution of the initiator.")
    destination: DirectionAttributes | None = Field(
        default_factory=DirectionAttributes, description="Attribution of the responder.")

    @model_validator(mode="before")
    @classmethod
    def _partial(cls, value: Any) -> Any:
        # a direction written in the file replaces the defaults: the other one is off.
        # An empty mapping (what `AttributesConfig()` also receives) keeps the defaults; the
        # config loader passes {"source": None, "destination": None} for `attributes {}`.
        if isinstance(value, dict) and value:
            value = dict(value)
            for direction in ("source", "destination"):
                value.setdefault(direction, None)
        return value

    def k8s(self, direction: str) -> K8sAttributes | None:
        """The k8s attribution settings of "source" or "destination", or None when off."""
        block = getattr(self, direction)
        return block.k8s if block is not None else None

    @property
    def enabled(self) -> bool:
        """Whether any direction asks for Kubernetes attributes."""
        return self.k8s("source") is not None or self.k8s("destination") is not None
