"""Static inventory (non-Kubernetes hosts) and combining it with the cluster."""

from __future__ import annotations

import json

import pytest
from tests.k8s.conftest import report
from tests.k8s.objects import pod

from mermin.config.k8s import AttributesConfig, InformerConfig
from mermin.enrich import ChainEnricher, K8sEnricher, StaticEnricher, build_enricher
from mermin.errors import ConfigError

INVENTORY = """
hosts:
  - match: 192.0.2.0/24
    attributes: {service.name: lab, namespace.name: infra}
  - match: 192.0.2.10
    attributes: {node.name: db-1, owner.name: postgres, owner.type: BareMetal}
  - match: [198.51.100.0/25, "2001:db8::/64"]
    attributes: {service.name: storage}
  - match: 10.0.0.0/8
    attributes: {service.name: corp}
"""


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return path


def test_longest_prefix_wins(inventory):
    e = StaticEnricher(inventory)
    reports = [report("192.0.2.10", "192.0.2.11"), report("2001:db8::5", "198.51.100.200"),
               report("10.1.2.3", "198.51.100.1")]
    e.enrich(reports)
    assert reports[0].src_k8s == {"node.name": "db-1", "owner.name": "postgres",
                                  "owner.type": "BareMetal"}
    assert reports[0].dst_k8s == {"service.name": "lab", "namespace.name": "infra"}
    assert reports[1].src_k8s == {"service.name": "storage"}
    assert reports[1].dst_k8s == {}  # outside the /25
    assert reports[2].src_k8s == {"service.name": "corp"}
    assert reports[2].dst_k8s == {"service.name": "storage"}
    assert e.stats.src_named == 3 and e.stats.dst_named == 2
    assert reports[0].attributes()["source.k8s.node.name"] == "db-1"


def test_mapping_form_and_json(tmp_path):
    path = tmp_path / "inv.json"
    path.write_text(json.dumps({"203.0.113.5": {"node.name": "edge"}}))
    e = StaticEnricher(path)
    r = report("203.0.113.5", "203.0.113.6")
    e.enrich([r])
    assert r.src_k8s == {"node.name": "edge"} and r.dst_k8s == {}


@pytest.mark.parametrize("text, message", [
    ("hosts:\n  - match: not-an-ip\n    attributes: {a: b}\n", "not an IP address"),
    ("hosts:\n  - attributes: {a: b}\n", "needs `match`"),
    ("hosts: [\n", "not valid YAML"),
])
def test_bad_inventory_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        StaticEnricher(path)
    with pytest.raises(ConfigError, match="No such file"):
        StaticEnricher(tmp_path / "missing.yaml")


def test_combined_with_kubernetes(api, kubeconfig, inventory):
    api.add("pods", pod("web", "default", ["10.5.0.1"]))
    informer = InformerConfig(kubeconfig_path=str(kubeconfig), static_inventory=str(inventory))
    chain = build_enricher(informer, AttributesConfig())
    assert isinstance(chain, ChainEnricher)
    assert [type(e) for e in chain.enrichers] == [K8sEnricher, StaticEnricher]
    chain.start()
    try:
        assert chain.ready and chain.cluster_uid
        r = report("10.5.0.1", "192.0.2.10")
        chain.enrich([r])
        assert r.src_k8s["pod.name"] == "web"  # the cluster names it; the /8 does not override
        assert r.dst_k8s["node.name"] == "db-1"
    finally:
        chain.stop()


def test_build_enricher_choices(tmp_path, inventory, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    # no cluster credentials anywhere: static only, or nothing
    assert build_enricher(InformerConfig(), AttributesConfig()) is None
    only = build_enricher(InformerConfig(static_inventory=str(inventory)), AttributesConfig())
    assert isinstance(only, StaticEnricher)
    off = AttributesConfig.model_validate({"source": None, "destination": None})
    assert not off.enabled


def test_build_enricher_from_root_config(kubeconfig):
    from mermin.config.schema import Config

    cfg = Config.model_validate({"discovery": {"informer": {"k8s": {
        "kubeconfig_path": str(kubeconfig)}}}})
    e = build_enricher(cfg)
    assert isinstance(e, K8sEnricher) and e.config.kubeconfig_path == str(kubeconfig)


def test_enrichers_follow_the_protocol(inventory):
    from mermin.enrich import Enricher

    static = StaticEnricher(inventory)
    k8s = K8sEnricher(InformerConfig())  # not started: no connection made
    assert isinstance(static, Enricher) and isinstance(k8s, Enricher)
    assert isinstance(ChainEnricher([k8s, static]), Enricher)
    assert not k8s.ready  # nothing synced yet
