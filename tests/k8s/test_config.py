"""Settings of `discovery "informer" "k8s"` and `attributes`: defaults, parsing, errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mermin.config.k8s import AttributesConfig, InformerConfig


def test_defaults_follow_the_original():
    cfg = InformerConfig()
    assert cfg.kubeconfig_path == "" and cfg.informers_sync_timeout == 30.0
    assert cfg.owner_relations.max_depth == 5
    assert cfg.owner_relations.include_kinds == [] and cfg.selector_relations == []
    attrs = AttributesConfig()
    src = attrs.k8s("source")
    assert src is not None and attrs.k8s("destination") is not None
    assert {"pod_ip", "cluster_ip", "node_ip", "endpoint_ip"} <= src.ip_tags()
    assert src.extract.fields()["service"] == {"name", "namespace", "uid"}
    assert src.extract.fields()["pod"] == {"name", "namespace", "uid", "node_name"}


def test_one_direction_written_turns_the_other_off():
    attrs = AttributesConfig.model_validate({"source": {"k8s": {}}})
    assert attrs.k8s("source") is not None and attrs.k8s("destination") is None


def test_original_config_shapes_parse():
    cfg = InformerConfig.model_validate({
        "kubeconfig_path": "/etc/kube", "informers_sync_timeout": "1m",
        "selectors": [{"kind": "Service"}, {"kind": "pod", "namespaces": ["a"],
                       "match_labels": {"x": "y"},
                       "match_expressions": [{"key": "env", "operator": "In",
                                              "values": ["dev"]}]}],
        "owner_relations": {"max_depth": 2, "include_kinds": ["Service"],
                            "exclude_kinds": ["EndpointSlice"]},
        "selector_relations": [{"kind": "NetworkPolicy", "to": "Pod",
                                "selector_match_labels_field": "spec.podSelector.matchLabels"}],
    })
    assert cfg.informers_sync_timeout == 60.0
    assert cfg.selectors_for("pod")[0].match_labels == {"x": "y"}
    assert cfg.owner_relations.emits("deployment") is False  # include list without it
    attrs = AttributesConfig.model_validate({"source": {"k8s": {
        "extract": {"metadata": ["[*].metadata.name", "pod.metadata.uid"],
                    "label": {"from": "service", "key_regex": "kubernetes.io/(.*)",
                              "value_regex": "(.*)", "attribute": "$1",
                              "attribute_value": "$1"}},
        "association": {"pod": {"sources": [
            {"from": "source.ip", "to": ["status.podIP"]},
            {"from": "source.port", "to": ["spec.containers[*].ports[*].containerPort"]}]},
            "ingress": {"sources": [{"from": "source.ip",
                                     "to": ["status.loadBalancer.ingress[*].ip"]}]}}}}})
    src = attrs.k8s("source")
    assert src.ip_tags() == {"pod_ip"}
    assert len(src.extract.label) == 1 and src.extract.label[0].from_ == "service"


@pytest.mark.parametrize("block, message", [
    ({"extract": {"metadata": ["pod.spec.nodeName"]}}, "must look like"),
    ({"extract": {"metadata": ["widget.metadata.name"]}}, "unknown kind"),
    ({"extract": {"label": [{"from": "pod"}]}}, "exactly one of"),
    ({"extract": {"label": [{"from": "pod", "key_regex": "("}]}}, "invalid regex"),
    ({"extract": {"label": [{"from": "gadget", "key": "a"}]}}, "cannot extract from"),
    ({"extract": {"labels": []}}, "Extra inputs"),
])
def test_mistakes_are_reported(block, message):
    with pytest.raises(ValidationError, match=message):
        AttributesConfig.model_validate({"source": {"k8s": block}})


def test_informer_mistakes_are_reported():
    with pytest.raises(ValidationError, match="not supported"):
        InformerConfig.model_validate({"selector_relations": [{"kind": "Ingress"}]})
    with pytest.raises(ValidationError, match="invalid duration"):
        InformerConfig.model_validate({"informers_sync_timeout": "soon"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        InformerConfig.model_validate({"kubeconfig": "/x"})
