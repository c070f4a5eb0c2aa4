"""Attribution of both endpoints against the API test server, through the real client."""

from __future__ import annotations

from tests.k8s.conftest import enrich_one, wait_for
from tests.k8s.objects import endpointslice, node, owner, pod, service


def test_pod_service_node_and_cluster_uid(api, enricher):
    api.add("pods", pod("web-1", "prod", ["10.0.0.5"], node="node-a"))
    api.add("services", service("web", "prod", ["10.96.0.10"], external_ips=["203.0.113.7"],
                                lb_ips=["198.51.100.9"]))
    api.add("nodes", node("node-a", ["192.168.1.1"], external=["203.0.113.1"]))
    e = enricher(attributes={"source": {"k8s": {"extract": {"metadata": [
        "[*].metadata.name", "[*].metadata.namespace", "pod.metadata.node_name"]}}},
        "destination": {"k8s": {}}})
    assert e.ready
    r = enrich_one(e, "10.0.0.5", "10.96.0.10")
    assert r.src_k8s == {"pod.name": "web-1", "namespace.name": "prod", "node.name": "node-a"}
    assert r.dst_k8s["service.name"] == "web" and r.dst_k8s["namespace.name"] == "prod"
    assert "service.uid" in r.dst_k8s  # default extract includes uids
    for ip in ("203.0.113.7", "198.51.100.9"):
        assert enrich_one(e, "10.0.0.5", ip).dst_k8s["service.name"] == "web"
    for ip in ("192.168.1.1", "203.0.113.1"):
        assert enrich_one(e, ip, "10.0.0.5").src_k8s == {"node.name": "node-a"}
    unknown = enrich_one(e, "172.16.0.1", "10.0.0.99")
    assert unknown.src_k8s == {} and unknown.dst_k8s == {}
    kube_system = next(n for n in e.state.namespaces.values() if n.name == "kube-system")
    assert e.cluster_uid == kube_system.uid


def test_multi_ip_pod_v4_and_v6(api, enricher):
    api.add("pods", pod("dual", "default", ["10.0.0.7", "fd00::7"]))
    e = enricher()
    for ip in ("10.0.0.7", "fd00::7"):
        assert enrich_one(e, ip, "10.9.9.9").src_k8s["pod.name"] == "dual"
    # IPv6 written in another textual form still matches (addresses are normalised)
    api.add("pods", pod("v6", "default", ["FD00:0:0::8"]))
    assert wait_for(lambda: enrich_one(e, "fd00::8", "10.9.9.9").src_k8s.get("pod.name"))


def test_host_network_pod_claims_node_address_by_port(api, enricher):
    api.add("nodes", node("node-a", ["192.168.1.1"]))
    api.add("pods", pod("kubelet-proxy", "kube-system", host_network=True, host_ip="192.168.1.1",
                        ports=[("metrics", 10249, "TCP")], container="proxy"))
    api.add("pods", pod("exporter", "kube-system", host_network=True, host_ip="192.168.1.1",
                        ports=[("http", 9100, "TCP")], container="node-exporter"))
    e = enricher()
    r = enrich_one(e, "10.0.0.5", "192.168.1.1", dport=10249)
    assert r.dst_k8s["pod.name"] == "kubelet-proxy" and r.dst_k8s["container.name"] == "proxy"
    r = enrich_one(e, "10.0.0.5", "192.168.1.1", dport=9100)
    assert r.dst_k8s["pod.name"] == "exporter"
    r = enrich_one(e, "10.0.0.5", "192.168.1.1", dport=22)  # not a pod's port: the node
    assert r.dst_k8s == {"node.name": "node-a", "node.uid": r.dst_k8s["node.uid"]}
    # the source side of a hostNetwork pod uses an ephemeral port: the node
    assert enrich_one(e, "192.168.1.1", "10.0.0.5", sport=51000).src_k8s["node.name"] == "node-a"


def test_owner_chains(api, enricher):
    dep = api.add("deployments", owner("Deployment", "web", "prod"))
    rs = api.add("replicasets", owner("ReplicaSet", "web-5d8f", "prod", parent=dep))
    cron = api.add("cronjobs", owner("CronJob", "backup", "prod"))
    job = api.add("jobs", owner("Job", "backup-28000", "prod", parent=cron))
    sts = api.add("statefulsets", owner("StatefulSet", "db", "prod"))
    ds = api.add("daemonsets", owner("DaemonSet", "agent", "prod"))
    api.add("pods", pod("web-5d8f-x", "prod", ["10.0.1.1"], owner=rs))
    api.add("pods", pod("backup-28000-y", "prod", ["10.0.1.2"], owner=job))
    api.add("pods", pod("db-0", "prod", ["10.0.1.3"], owner=sts))
    api.add("pods", pod("agent-z", "prod", ["10.0.1.4"], owner=ds))
    api.add("pods", pod("bare", "prod", ["10.0.1.5"]))
    e = enricher(attributes={"source": {"k8s": {"extract": {"metadata": ["[*].metadata.name"]}}}})

    def src(ip):
        return enrich_one(e, ip, "10.9.9.9").src_k8s

    assert src("10.0.1.1") == {"pod.name": "web-5d8f-x", "replicaset.name": "web-5d8f",
                               "deployment.name": "web", "owner.name": "web",
                               "owner.type": "Deployment"}
    assert src("10.0.1.2") == {"pod.name": "backup-28000-y", "job.name": "backup-28000",
                               "cronjob.name": "backup", "owner.name": "backup",
                               "owner.type": "CronJob"}
    assert src("10.0.1.3")["owner.type"] == "StatefulSet"
    assert src("10.0.1.3")["statefulset.name"] == "db"
    assert src("10.0.1.4")["daemonset.name"] == "agent"
    assert src("10.0.1.5") == {"pod.name": "bare"}


def test_owner_relations_depth_and_kind_filters(api, enricher):
    dep = api.add("deployments", owner("Deployment", "web", "prod"))
    rs = api.add("replicasets", owner("ReplicaSet", "web-5d8f", "prod", parent=dep))
    api.add("pods", pod("web-5d8f-x", "prod", ["10.0.1.1"], owner=rs))
    meta = {"extract": {"metadata": ["[*].metadata.name"]}}
    shallow = enricher(informer={"owner_relations": {"max_depth": 1}},
                       attributes={"source": {"k8s": meta}})
    a = enrich_one(shallow, "10.0.1.1", "10.9.9.9").src_k8s
    assert a["owner.name"] == "web-5d8f" and a["owner.type"] == "ReplicaSet"
    assert "deployment.name" not in a
    only_rs = enricher(informer={"owner_relations": {"exclude_kinds": ["Deployment"]}},
                       attributes={"source": {"k8s": meta}})
    a = enrich_one(only_rs, "10.0.1.1", "10.9.9.9").src_k8s
    assert a["owner.type"] == "ReplicaSet" and "deployment.name" not in a
    only_dep = enricher(informer={"owner_relations": {"include_kinds": ["deployment"]}},
                        attributes={"source": {"k8s": meta}})
    a = enrich_one(only_dep, "10.0.1.1", "10.9.9.9").src_k8s
    assert a["deployment.name"] == "web" and "replicaset.name" not in a


def test_container_name_by_port(api, enricher):
    p = pod("multi", "default", ["10.0.2.1"], ports=[("http", 8080, "TCP")], container="web")
    p["spec"]["containers"].append({"name": "sidecar", "ports": [
        {"name": "admin", "containerPort": 15000, "protocol": "TCP"}]})
    api.add("pods", p)
    e = enricher()
    assert enrich_one(e, "10.9.9.9", "10.0.2.1", dport=8080).dst_k8s["container.name"] == "web"
    assert enrich_one(e, "10.9.9.9", "10.0.2.1",
                      dport=15000).dst_k8s["container.name"] == "sidecar"
    other = enrich_one(e, "10.9.9.9", "10.0.2.1", dport=9999).dst_k8s
    assert other["pod.name"] == "multi" and "container.name" not in other
    # the source side matches its own port (a client on an ephemeral port has no container)
    assert "container.name" not in enrich_one(e, "10.0.2.1", "10.9.9.9", sport=43210).src_k8s


def test_watch_events_invalidate_cache(api, enricher):
    p = api.add("pods", pod("a", "default", ["10.0.3.1"]))
    e = enricher()
    assert enrich_one(e, "10.0.3.1", "10.9.9.9").src_k8s["pod.name"] == "a"
    hits = e.stats.cache_hits
    assert enrich_one(e, "10.0.3.1", "10.9.9.9").src_k8s["pod.name"] == "a"
    assert e.stats.cache_hits > hits  # second lookup served from the cache
    # the pod moves to another IP; a new pod appears on the old one
    p["status"]["podIPs"] = [{"ip": "10.0.3.2"}]
    p["status"]["podIP"] = "10.0.3.2"
    api.modify("pods", p)
    api.add("pods", pod("b", "default", ["10.0.3.1"]))
    wait_for(lambda: enrich_one(e, "10.0.3.1", "10.9.9.9").src_k8s.get("pod.name") == "b",
             what="new pod on the reused address")
    assert enrich_one(e, "10.0.3.2", "10.9.9.9").src_k8s["pod.name"] == "a"


def test_deleted_pod_grace_period_and_ip_reuse(api, enricher):
    old = api.add("pods", pod("old", "default", ["10.0.4.1"]))
    gone = api.add("pods", pod("gone", "default", ["10.0.4.2"]))
    e = enricher(informer={"deleted_pod_grace": "30s"})
    now = [1000.0]
    e.state.clock = lambda: now[0]  # the grace period runs on an injected clock
    api.delete("pods", old)
    api.delete("pods", gone)
    wait_for(lambda: e.state.tombstones == 2, what="tombstones")
    # within the grace period the deleted pods keep their names
    assert enrich_one(e, "10.0.4.1", "10.9.9.9").src_k8s["pod.name"] == "old"
    # a new pod taking the address wins at once
    api.add("pods", pod("new", "default", ["10.0.4.1"]))
    wait_for(lambda: enrich_one(e, "10.0.4.1", "10.9.9.9").src_k8s.get("pod.name") == "new",
             what="IP reuse")
    now[0] += 29.0
    assert enrich_one(e, "10.0.4.2", "10.9.9.9").src_k8s["pod.name"] == "gone"
    now[0] += 2.0
    assert enrich_one(e, "10.0.4.2", "10.9.9.9").src_k8s == {}  # grace over
    assert e.state.tombstones == 0
    assert enrich_one(e, "10.0.4.1", "10.9.9.9").src_k8s["pod.name"] == "new"


def test_terminating_and_finished_pods(api, enricher):
    api.add("pods", pod("leaving", "default", ["10.0.5.1"], deleting=True))
    api.add("pods", pod("done", "default", ["10.0.5.2"], phase="Succeeded"))
    e = enricher()
    # a terminating pod is only a fallback: it names its address while nothing else claims it
    assert enrich_one(e, "10.0.5.1", "10.9.9.9").src_k8s["pod.name"] == "leaving"
    api.add("pods", pod("arriving", "default", ["10.0.5.1"]))
    wait_for(lambda: enrich_one(e, "10.0.5.1", "10.9.9.9").src_k8s.get("pod.name")
             == "arriving", what="live pod beats terminating pod")
    # a completed pod released its IP: it does not match
    assert enrich_one(e, "10.0.5.2", "10.9.9.9").src_k8s == {}


def test_endpointslice_addresses(api, enricher):
    known = api.add("pods", pod("api-1", "prod", ["10.0.6.1"]))
    api.add("endpointslices", endpointslice("api-x1", "prod", "api", [
        (["10.0.6.1"], known), (["192.0.2.50"], None)]))
    e = enricher()
    # the pod itself wins over its endpoint entry
    assert enrich_one(e, "10.9.9.9", "10.0.6.1").dst_k8s["pod.name"] == "api-1"
    ext = enrich_one(e, "10.9.9.9", "192.0.2.50").dst_k8s
    assert ext == {"namespace.name": "prod", "service.name": "api"}


def test_selectors_restrict_objects(api, enricher):
    api.add("pods", pod("p", "prod", ["10.0.7.1"], labels={"team": "a"}))
    api.add("pods", pod("d", "dev", ["10.0.7.2"], labels={"team": "a"}))
    api.add("pods", pod("q", "prod", ["10.0.7.3"], labels={"team": "b"}))
    e = enricher(informer={"selectors": [{"kind": "Pod", "namespaces": ["prod"],
                                          "match_labels": {"team": "a"}}]})
    assert enrich_one(e, "10.0.7.1", "10.9.9.9").src_k8s["pod.name"] == "p"
    assert enrich_one(e, "10.0.7.2", "10.9.9.9").src_k8s == {}
    assert enrich_one(e, "10.0.7.3", "10.9.9.9").src_k8s == {}
    assert len(e.state.pods) == 1  # filtered objects are not even kept


def test_selector_relations_service_names_pods(api, enricher):
    api.add("pods", pod("web-1", "prod", ["10.0.8.1"], labels={"app": "web"}))
    api.add("services", service("web", "prod", ["10.96.1.1"], selector={"app": "web"}))
    api.add("services", service("web-canary", "prod", ["10.96.1.2"], selector={"app": "web"}))
    api.add("services", service("other", "prod", ["10.96.1.3"], selector={"app": "db"}))
    e = enricher(informer={"selector_relations": [
        {"kind": "Service", "to": "Pod", "selector_match_labels_field": "spec.selector"}]})
    a = enrich_one(e, "10.9.9.9", "10.0.8.1").dst_k8s
    assert a["service.name"] == "web,web-canary"


def test_direction_settings(api, enricher):
    api.add("pods", pod("a", "default", ["10.0.9.1"]))
    api.add("services", service("s", "default", ["10.96.9.1"]))
    # only the source direction configured, and it does not associate services
    e = enricher(attributes={"source": {"k8s": {"association": {"pod": {"sources": [
        {"from": "source.ip", "to": ["status.podIP"]}]}}}}})
    r = enrich_one(e, "10.96.9.1", "10.0.9.1")
    assert r.src_k8s == {} and r.dst_k8s == {}
    r = enrich_one(e, "10.0.9.1", "10.96.9.1")
    assert r.src_k8s["pod.name"] == "a" and r.dst_k8s == {}
