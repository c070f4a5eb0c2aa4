"""Pieces without the API server: selectors, the IP index order, tombstones, extraction."""

from __future__ import annotations

import pytest
from tests.k8s.objects import node, pod, service

from mermin.config.k8s import AttributesConfig, InformerConfig, MetadataExtraction
from mermin.enrich.k8s.attributes import Attributor, AttrMap, ExtractionRule
from mermin.enrich.k8s.projections import Projector
from mermin.enrich.k8s.selectors import LabelSelector
from mermin.enrich.k8s.store import ClusterState


@pytest.mark.parametrize("spec, labels, expected", [
    (None, {}, True),
    ({}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"},
     True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"},
     False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ({"matchLabels": {"x": "y"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]},
     {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}, {"a": "1"}, False),
])
def test_label_selector(spec, labels, expected):
    assert LabelSelector.from_spec(spec).matches(labels) is expected


def _state(grace=30.0):
    now = [1000.0]
    st = ClusterState(grace, clock=lambda: now[0])
    pr = Projector(InformerConfig(), AttributesConfig())
    return st, pr, now


def test_index_order_pod_service_node_endpoint():
    st, pr, _ = _state()
    attr = Attributor(st, AttributesConfig().k8s("source"), InformerConfig().owner_relations)
    st.upsert("node", pr.node(node("n1", ["10.0.0.1"])))
    assert attr.lookup("10.0.0.1").base["node.name"] == "n1"
    # a (misconfigured) service on the same address beats the node; a pod beats both
    st.upsert("service", pr.service(service("s", "default", ["10.0.0.1"])))
    assert attr.lookup("10.0.0.1").base["service.name"] == "s"
    st.upsert("pod", pr.pod(pod("p", "default", ["10.0.0.1"])))
    entry = attr.lookup("10.0.0.1")
    assert entry.base["pod.name"] == "p" and entry.pod is not None
    assert isinstance(entry.base, AttrMap)
    with pytest.raises(TypeError):
        entry.base["pod.name"] = "x"
    assert "10.0.0.1" in st.index.take_dirty()


def test_tombstone_expiry_with_injected_clock():
    st, pr, now = _state(grace=30.0)
    p = pr.pod(pod("p", "default", ["10.0.0.9"]))
    st.upsert("pod", p)
    st.delete("pod", p.uid)
    assert st.tombstones == 1 and st.index.get("10.0.0.9")
    now[0] += 29
    assert st.purge_expired() == 0
    now[0] += 2
    assert st.purge_expired() == 1
    assert st.index.get("10.0.0.9") == () and st.tombstones == 0


def test_unchanged_objects_are_ignored():
    st, pr, _ = _state()
    raw = pod("p", "default", ["10.0.0.2"])
    assert st.upsert("pod", pr.pod(raw)) is True
    raw["status"]["conditions"] = [{"type": "Ready", "status": "True"}]  # not projected
    assert st.upsert("pod", pr.pod(raw)) is False
    raw["metadata"]["labels"] = {"v": "2"}
    assert st.upsert("pod", pr.pod(raw)) is True


@pytest.mark.parametrize("rule, mapping, expected", [
    ({"key": "app"}, {"app": "web"}, {"p.app": "web"}),
    ({"key": "app", "attribute": "name"}, {"app": "web"}, {"p.name": "web"}),
    ({"key_regex": "team/(.+)", "attribute": "t-$1"}, {"team/a": "1", "xteam/b": "2"},
     {"p.t-a": "1"}),
    ({"key": "v", "value_regex": r"^v(\d+)", "attribute_value": "${1}"}, {"v": "v12.3"},
     {"p.v": "12"}),
    ({"key": "v", "value_regex": r"^v(\d+)"}, {"v": "x"}, {}),
])
def test_extraction_rule(rule, mapping, expected):
    out: dict[str, str] = {}
    ExtractionRule(MetadataExtraction.model_validate({"from": "pod", **rule})).apply(
        mapping, "p.", out)
    assert out == expected
