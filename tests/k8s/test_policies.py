"""NetworkPolicy selection and admission (network.policies.ingress / .egress)."""

from __future__ import annotations

import pytest
from tests.k8s.conftest import enrich_one, wait_for
from tests.k8s.objects import netpol, pod

WEB, FRONT, TOOL, DB, DNS, DEVPLAIN = ("10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.4",
                                       "10.2.0.5", "10.2.0.6")
UDP, TCP = 17, 6

POLICIES = {
    "allow-frontend": {"podSelector": {"matchLabels": {"app": "web"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels":
                                                              {"role": "frontend"}}}],
                                    "ports": [{"protocol": "TCP", "port": 8080}]}]},
    "allow-dev-ns": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels":
                                                                  {"env": "dev"}}}]}]},
    "allow-dev-frontend": {"podSelector": {"matchLabels": {"app": "web"}},
                           "ingress": [{"from": [{
                               "namespaceSelector": {"matchExpressions": [
                                   {"key": "env", "operator": "In", "values": ["dev"]}]},
                               "podSelector": {"matchLabels": {"role": "frontend"}}}]}]},
    "allow-cidr": {"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24",
                                                      "except": ["192.0.2.128/25"]}}],
                                "ports": [{"port": 8000, "endPort": 8100}]}]},
    "allow-named": {"podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [{"ports": [{"port": "pg"}]}]},
    "deny-all": {"podSelector": {}, "policyTypes": ["Ingress"]},
    "egress-dns": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": {}}],
                               "ports": [{"protocol": "UDP", "port": 53}]}]},
    "egress-db-named": {"podSelector": {"matchLabels": {"app": "web"}},
                        "policyTypes": ["Egress"],
                        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                                    "ports": [{"port": "pg"}]}]},
    "dns-both": {"podSelector": {"matchLabels": {"app": "dns"}}, "ingress": [{}],
                 "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
    "dns-ingress-only": {"podSelector": {"matchLabels": {"app": "dns"}}, "ingress": [{}]},
}


@pytest.fixture
def cluster(api, enricher):
    api.add("pods", pod("web", "prod", [WEB], labels={"app": "web"},
                        ports=[("http", 8080, "TCP")]))
    api.add("pods", pod("front", "prod", [FRONT], labels={"role": "frontend"}))
    api.add("pods", pod("tool", "dev", [TOOL], labels={"role": "frontend"}))
    api.add("pods", pod("plain", "dev", [DEVPLAIN]))
    api.add("pods", pod("db", "prod", [DB], labels={"app": "db"}, ports=[("pg", 5432, "TCP")]))
    api.add("pods", pod("dns", "prod", [DNS], labels={"app": "dns"},
                        ports=[("dns", 53, "UDP")]))
    for name, spec in POLICIES.items():
        api.add("networkpolicies", netpol(name, "prod", spec))
    return enricher()


def flow(e, src, dst, dport, proto=TCP):
    r = enrich_one(e, src, dst, 40000, dport, proto)
    return sorted(p.split("/")[1] for p in r.policies_ingress or []), \
        sorted(p.split("/")[1] for p in r.policies_egress or [])


def test_pod_selector_same_namespace(cluster):
    ingress, _ = flow(cluster, FRONT, WEB, 8080)
    assert ingress == ["allow-frontend"]


def test_namespace_selector_and_combined(cluster):
    ingress, _ = flow(cluster, TOOL, WEB, 8080)  # dev + role=frontend
    assert ingress == ["allow-dev-frontend", "allow-dev-ns"]
    ingress, _ = flow(cluster, DEVPLAIN, WEB, 8080)  # dev, no role
    assert ingress == ["allow-dev-ns"]


def test_ports_protocol_and_output_format(cluster):
    ingress, _ = flow(cluster, FRONT, WEB, 9090)  # allow-frontend is for 8080 only
    assert ingress == []
    ingress, _ = flow(cluster, FRONT, WEB, 8080, UDP)  # TCP only
    assert ingress == []
    r = enrich_one(cluster, FRONT, WEB, 40000, 8080)
    assert r.policies_ingress == ["prod/allow-frontend"]
    assert r.attributes()["network.policies.ingress"] == ["prod/allow-frontend"]


def test_ip_block_with_except_and_end_port(cluster):
    assert flow(cluster, "192.0.2.10", WEB, 8080)[0] == ["allow-cidr"]
    assert flow(cluster, "192.0.2.10", WEB, 8100)[0] == ["allow-cidr"]
    assert flow(cluster, "192.0.2.10", WEB, 8101)[0] == []  # beyond endPort
    assert flow(cluster, "192.0.2.200", WEB, 8080)[0] == []  # in `except`
    assert flow(cluster, "198.51.100.1", WEB, 8080)[0] == []  # outside the cidr


def test_named_ports(cluster):
    assert flow(cluster, FRONT, DB, 5432)[0] == ["allow-named"]
    assert flow(cluster, FRONT, DB, 5433)[0] == []
    _, egress = flow(cluster, WEB, DB, 5432)  # egress named port resolved on the peer pod
    assert egress == ["egress-db-named"]
    assert flow(cluster, WEB, DB, 5433)[1] == []


def test_egress_and_default_policy_types(cluster):
    _, egress = flow(cluster, WEB, DNS, 53, UDP)
    assert egress == ["egress-dns"]
    assert flow(cluster, WEB, DNS, 53, TCP)[1] == []
    # dns-both has egress rules and no policyTypes: Egress is implied; dns-ingress-only: not
    _, egress = flow(cluster, DNS, "192.0.2.1", 443)
    assert egress == ["dns-both"]
    ingress, _ = flow(cluster, FRONT, DNS, 53, UDP)
    assert ingress == ["dns-both", "dns-ingress-only"]


def test_selecting_policy_that_admits_nothing_is_not_listed(cluster):
    # deny-all selects every pod in prod, but admits nothing: never reported
    for src, dst, port in ((FRONT, WEB, 8080), (FRONT, DB, 5432), ("192.0.2.10", WEB, 8080)):
        assert "deny-all" not in flow(cluster, src, dst, port)[0]


def test_policy_changes_apply(api, cluster):
    assert flow(cluster, FRONT, WEB, 9090)[0] == []
    api.add("networkpolicies", netpol("open-9090", "prod", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"ports": [{"port": 9090}]}]}))
    wait_for(lambda: flow(cluster, FRONT, WEB, 9090)[0] == ["open-9090"], what="new policy")
