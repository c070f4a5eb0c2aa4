"""Label and annotation extraction (`extract { label {} annotation {} }`)."""

from __future__ import annotations

from tests.k8s.conftest import enrich_one, wait_for
from tests.k8s.objects import pod, service


def test_labels_and_annotations_by_key_and_regex(api, enricher):
    api.add("pods", pod("web-1", "prod", ["10.1.0.1"],
                        labels={"app": "web", "tier": "frontend", "pod-template-hash": "5d8f"},
                        annotations={"example.com/team": "payments", "example.com/owner": "ann",
                                     "other.io/ignored": "x", "version": "release-1.2.3"}))
    api.add("services", service("web", "prod", ["10.96.0.1"],
                                labels={"app.kubernetes.io/name": "web",
                                        "app.kubernetes.io/part-of": "shop"}))
    extract = {
        "metadata": ["[*].metadata.name"],
        "label": [
            {"from": "pod", "key": "app"},
            {"from": "Pod", "key": "tier", "attribute": "layer"},
            {"from": "service", "key_regex": "app.kubernetes.io/(.*)", "attribute": "$1"},
        ],
        "annotation": [
            {"from": "pod", "key_regex": "example.com/(?P<what>.*)", "attribute": "${what}"},
            {"from": "pod", "key": "version", "value_regex": r"release-(\d+)\.(\d+)",
             "attribute_value": "$1.$2"},
        ],
    }
    e = enricher(attributes={"source": {"k8s": {"extract": extract}},
                             "destination": {"k8s": {"extract": extract}}})
    r = enrich_one(e, "10.1.0.1", "10.96.0.1")
    assert r.src_k8s == {
        "pod.name": "web-1", "pod.label.app": "web", "pod.label.layer": "frontend",
        "pod.annotation.team": "payments", "pod.annotation.owner": "ann",
        "pod.annotation.version": "1.2",
    }
    assert r.dst_k8s == {"service.name": "web", "service.label.name": "web",
                         "service.label.part-of": "shop"}
    # only the annotations a rule can match are kept in memory
    kept = next(iter(e.state.pods.values())).annotations
    assert set(kept) == {"example.com/team", "example.com/owner", "version"}


def test_no_labels_unless_configured(api, enricher):
    api.add("pods", pod("web-1", "prod", ["10.1.0.2"], labels={"app": "web"},
                        annotations={"a": "b"}))
    e = enricher()
    attrs = enrich_one(e, "10.1.0.2", "10.9.9.9").src_k8s
    assert not any(".label." in k or ".annotation." in k for k in attrs)
    assert next(iter(e.state.pods.values())).annotations is None


def test_label_change_reaches_cached_endpoint(api, enricher):
    p = api.add("pods", pod("web-1", "prod", ["10.1.0.3"], labels={"version": "v1"}))
    e = enricher(attributes={"source": {"k8s": {"extract": {
        "label": [{"from": "pod", "key": "version"}]}}}})
    assert enrich_one(e, "10.1.0.3", "10.9.9.9").src_k8s["pod.label.version"] == "v1"
    p["metadata"]["labels"]["version"] = "v2"
    api.modify("pods", p)
    wait_for(lambda: enrich_one(e, "10.1.0.3", "10.9.9.9").src_k8s["pod.label.version"] == "v2",
             what="relabel")


def test_namespace_and_owner_labels(api, enricher):
    from tests.k8s.objects import owner

    dep = api.add("deployments", owner("Deployment", "web", "prod", labels={"team": "shop"}))
    api.add("pods", pod("web-1", "prod", ["10.1.0.4"], owner=dep))
    e = enricher(attributes={"source": {"k8s": {"extract": {
        "metadata": ["[*].metadata.name"],
        "label": [{"from": "namespace", "key": "env"}, {"from": "deployment", "key": "team"}]}}}})
    a = enrich_one(e, "10.1.0.4", "10.9.9.9").src_k8s
    assert a["namespace.label.env"] == "prod"
    assert a["deployment.label.team"] == "shop"
