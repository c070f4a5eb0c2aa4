"""End to end: the real agent (`mermin run`) on a test node whose "pods" (network namespaces)
are served as Pods by the Kubernetes API test server; flows between them come out with both
ends named and the NetworkPolicy that admits them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from tests.e2e.agent_harness import flows_by_trace, make_node, run_agent, write_config
from tests.helpers.netns import wait_for_port
from tests.k8s.apiserver import ApiServer, write_kubeconfig
from tests.k8s.objects import namespace, netpol, owner, pod

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root", "bpf_object")]

SERVER = ("import socketserver\n"
          "class H(socketserver.BaseRequestHandler):\n"
          "    def handle(self):\n"
          "        self.request.recv(100); self.request.sendall(b'ok')\n"
          "class S(socketserver.ThreadingTCPServer):\n"
          "    allow_reuse_address = True\n"
          "S(('0.0.0.0', 8080), H).serve_forever()\n")
CLIENT = ("import socket, sys\n"
          "with socket.create_connection((sys.argv[1], 8080), timeout=5) as s:\n"
          "    s.sendall(b'hi'); s.recv(10)\n")


def test_flows_between_pods_are_named(tmp_path: Path) -> None:
    with ApiServer() as api, make_node(("a", "b")) as node:
        api.add("namespaces", namespace("kube-system"))
        api.add("namespaces", namespace("shop"))
        dep = api.add("deployments", owner("Deployment", "backend", "shop"))
        rs = api.add("replicasets", owner("ReplicaSet", "backend-7c9", "shop", parent=dep))
        api.add("pods", pod("frontend-0", "shop", [node.ip4["a"], node.ip6["a"]],
                            labels={"app": "frontend"}))
        api.add("pods", pod("backend-7c9-x", "shop", [node.ip4["b"], node.ip6["b"]],
                            labels={"app": "backend"}, owner=rs,
                            ports=[("http", 8080, "TCP")], container="api"))
        api.add("networkpolicies", netpol("backend-from-frontend", "shop", {
            "podSelector": {"matchLabels": {"app": "backend"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                         "ports": [{"port": "http"}]}]}))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, api.token)
        config = tmp_path / "agent.hcl"
        extra = f'\ndiscovery "informer" "k8s" {{\n  kubeconfig_path = "{kubeconfig}"\n}}\n'
        metrics_port, health_port = write_config(config, list(node.host_ends.values()),
                                                 extra=extra)
        node.topo.spawn_in(node.pods["b"], [sys.executable, "-c", SERVER])
        wait_for_port(node.pods["b"], 8080)
        with run_agent(config, tmp_path, metrics_port, health_port) as agent:
            agent.wait_ready()
            node.topo.run_in(node.pods["a"], [sys.executable, "-c", CLIENT, node.ip4["b"]])
            time.sleep(1.0)
            metrics = agent.metrics()
            assert agent.stop() == 0, agent.stderr()[-3000:]
        reports = agent.reports()
    assert 'mermin_k8s_watcher_events_total{event="init_done",kind="pod"} 1.0' in metrics
    flows = [r for rs_ in flows_by_trace(reports).values() for r in rs_
             if r["source.address"] == node.ip4["a"] and r["destination.address"] == node.ip4["b"]
             and r.get("destination.port") == 8080]
    assert flows, reports[:3]
    last = flows[-1]
    assert last["source.k8s.pod.name"] == "frontend-0"
    assert last["source.k8s.namespace.name"] == "shop"
    assert last["destination.k8s.pod.name"] == "backend-7c9-x"
    assert last["destination.k8s.container.name"] == "api"
    assert last["destination.k8s.deployment.name"] == "backend"
    assert last["destination.k8s.owner.type"] == "Deployment"
    assert last["network.policies.ingress"] == ["shop/backend-from-frontend"]
