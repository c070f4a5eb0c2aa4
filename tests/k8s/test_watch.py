"""List+watch protocol behaviour: pagination, bookmarks, 410 relist, reconnects, sync timeout,
and the client's kubeconfig auth paths (token, exec plugin)."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from tests.k8s.apiserver import ApiServer, write_kubeconfig
from tests.k8s.conftest import enrich_one, wait_for
from tests.k8s.objects import pod

from mermin.config.k8s import InformerConfig
from mermin.enrich import K8sEnricher
from mermin.errors import KubernetesError


def test_paginated_list(api, enricher):
    for i in range(7):
        api.add("pods", pod(f"p{i}", "default", [f"10.3.0.{i + 1}"]))
    e = enricher(informer={"page_size": 2})
    assert len(e.state.pods) == 7
    assert api.count("pods", "list") == 4  # 2+2+2+1
    continue_tokens = [q for p, w, q in api.requests if p == "pods" and "continue" in q]
    assert len(continue_tokens) == 3


def test_watch_resumes_from_list_version_with_bookmarks(api, enricher):
    e = enricher()
    watches = [q for p, w, q in api.requests if p == "pods" and w == "watch"]
    assert watches and watches[0]["allowWatchBookmarks"] == "true"
    assert int(watches[0]["resourceVersion"]) > 0
    wait_for(lambda: e.stats.events.get(("pod", "bookmark"), 0) >= 1, what="bookmark")
    api.add("pods", pod("late", "default", ["10.3.1.1"]))
    wait_for(lambda: enrich_one(e, "10.3.1.1", "10.9.9.9").src_k8s.get("pod.name") == "late")
    assert e.stats.events[("pod", "apply")] >= 1


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_relist_after_410(api, enricher, as_http):
    keep = api.add("pods", pod("keep", "default", ["10.3.2.1"]))
    lost = api.add("pods", pod("lost", "default", ["10.3.2.2"]))
    e = enricher(informer={"deleted_pod_grace": "0s"})
    lists = api.count("pods", "list")
    api.gone_as_http = as_http
    # while the agent is disconnected, history is compacted and the cluster changes
    api.compact()
    api.delete("pods", lost)
    api.add("pods", pod("fresh", "default", ["10.3.2.3"]))
    api.compact()
    api.drop_watches()
    wait_for(lambda: api.count("pods", "list") > lists, what="relist")
    wait_for(lambda: enrich_one(e, "10.3.2.3", "10.9.9.9").src_k8s.get("pod.name") == "fresh",
             what="pod added during the gap")
    wait_for(lambda: enrich_one(e, "10.3.2.2", "10.9.9.9").src_k8s == {},
             what="pod deleted during the gap")
    assert enrich_one(e, "10.3.2.1", "10.9.9.9").src_k8s["pod.name"] == "keep"
    assert e.stats.events[("pod", "relist")] >= 1
    assert keep  # the surviving pod was never lost from the index


def test_reconnect_after_dropped_connection_without_relist(api, enricher):
    e = enricher()
    lists, watches = api.count("pods", "list"), api.count("pods", "watch")
    api.drop_watches()
    api.add("pods", pod("after-drop", "default", ["10.3.3.1"]))
    wait_for(lambda: enrich_one(e, "10.3.3.1", "10.9.9.9").src_k8s.get("pod.name")
             == "after-drop", what="event after reconnect")
    assert api.count("pods", "watch") > watches
    assert api.count("pods", "list") == lists  # resumed from the resourceVersion, no relist
    assert e.stats.events[("pod", "error")] >= 1


def test_server_errors_are_retried(api, enricher):
    api.fail_next(3, 500)
    api.add("pods", pod("p", "default", ["10.3.4.1"]))
    e = enricher()
    assert e.ready
    assert enrich_one(e, "10.3.4.1", "10.9.9.9").src_k8s["pod.name"] == "p"
    assert sum(n for (k, ev), n in e.stats.events.items() if ev == "error") == 3


def test_sync_timeout_runs_undecorated_then_becomes_ready(api, enricher, caplog):
    api.add("pods", pod("p", "default", ["10.3.5.1"]))
    api.hold_lists.clear()  # the API server is slow: lists hang
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="mermin.enrich.k8s"):
        e = enricher(informer={"informers_sync_timeout": "0.3s"})
    assert time.monotonic() - started < 3
    assert not e.ready
    assert any("WITHOUT Kubernetes attributes" in r.getMessage() for r in caplog.records)
    r = enrich_one(e, "10.3.5.1", "10.9.9.9")
    assert r.src_k8s == {} and e.stats.undecorated == 1
    api.hold_lists.set()
    with caplog.at_level("WARNING", logger="mermin.enrich.k8s"):
        wait_for(lambda: e.ready, what="ready after late sync")
    assert any("finished late" in r.getMessage() for r in caplog.records)
    assert enrich_one(e, "10.3.5.1", "10.9.9.9").src_k8s["pod.name"] == "p"


def test_bad_token_is_not_ready(api, tmp_path):
    cfg = write_kubeconfig(tmp_path / "kc", api.url, token="wrong")
    e = K8sEnricher(InformerConfig(kubeconfig_path=str(cfg), informers_sync_timeout=0.3),
                    min_backoff=0.05, max_backoff=0.2)
    try:
        e.start()
        assert not e.ready
        wait_for(lambda: any("401" in i.last_error for i in e.informers), what="401 error")
    finally:
        e.stop()


def test_exec_credential_plugin(api, tmp_path: Path):
    """kubeconfig `exec` credentials: the client library runs the plugin for a token."""
    plugin = tmp_path / "cred-plugin"
    cred = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
            "status": {"token": api.token}}
    plugin.write_text(f"#!/bin/sh\necho '{json.dumps(cred)}'\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    kc = {"apiVersion": "v1", "kind": "Config", "current-context": "t",
          "clusters": [{"name": "t", "cluster": {"server": api.url}}],
          "users": [{"name": "t", "user": {"exec": {
              "apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin),
              "interactiveMode": "Never"}}}],
          "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kc))
    api.add("pods", pod("p", "default", ["10.3.6.1"]))
    e = K8sEnricher(InformerConfig(kubeconfig_path=str(path), informers_sync_timeout=10))
    try:
        e.start()
        assert e.ready
        assert enrich_one(e, "10.3.6.1", "10.9.9.9").src_k8s["pod.name"] == "p"
    finally:
        e.stop()


def test_missing_kubeconfig_is_one_clear_error(tmp_path):
    e = K8sEnricher(InformerConfig(kubeconfig_path=str(tmp_path / "nope")))
    with pytest.raises(KubernetesError, match="kubeconfig_path"):
        e.start()


def test_stop_is_prompt(kubeconfig):
    with ApiServer() as server:
        cfg = write_kubeconfig(kubeconfig.parent / "kc2", server.url, server.token)
        e = K8sEnricher(InformerConfig(kubeconfig_path=str(cfg)))
        e.start()
        assert e.ready
        started = time.monotonic()
        e.stop()
        assert time.monotonic() - started < 2.5
        assert not any(i._thread.is_alive() for i in e.informers)


def test_watcher_metrics(api, enricher):
    from mermin.telemetry.metrics import REGISTRY

    def value(kind, event):
        return REGISTRY.get_sample_value("mermin_k8s_watcher_events_total",
                                         {"kind": kind, "event": event}) or 0.0

    before = value("pod", "init_done")
    applied = value("pod", "apply")
    e = enricher()
    assert value("pod", "init_done") == before + 1
    api.add("pods", pod("m", "default", ["10.3.7.1"]))
    wait_for(lambda: value("pod", "apply") > applied, what="apply metric")
    enrich_one(e, "10.3.7.1", "10.9.9.9")
    assert REGISTRY.get_sample_value("mermin_k8s_decorator_flow_spans_total",
                                     {"status": "ok"}) >= 1


def test_in_cluster_service_account_over_tls(tmp_path, monkeypatch):
    """The in-cluster path: KUBERNETES_SERVICE_HOST/PORT, the service-account token and CA
    files (their well-known paths pointed at test files), HTTPS verified against the CA."""
    import kubernetes.config.incluster_config as incluster
    from tests.k8s.tls import make_tls

    ca, ctx = make_tls(tmp_path)
    token = tmp_path / "token"
    token.write_text("sa-token")
    with ApiServer(token="sa-token", ssl_context=ctx) as server:
        server.add("pods", pod("p", "default", ["10.3.8.1"]))
        host, port = server.url.removeprefix("https://").split(":")
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
        monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(token))
        monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(ca))
        e = K8sEnricher(InformerConfig(informers_sync_timeout=10))
        try:
            e.start()
            assert e._client.source == "in-cluster service account"
            assert e.ready
            assert enrich_one(e, "10.3.8.1", "10.9.9.9").src_k8s["pod.name"] == "p"
        finally:
            e.stop()


def test_malformed_kubeconfig_is_one_clear_error(tmp_path):
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [\n")
    with pytest.raises(KubernetesError, match="kubeconfig"):
        K8sEnricher(InformerConfig(kubeconfig_path=str(bad))).start()


def test_forbidden_kind_does_not_block_the_others(api, enricher, caplog):
    api.forbidden.add("networkpolicies")
    api.add("pods", pod("p", "default", ["10.3.9.1"]))
    with caplog.at_level("WARNING", logger="mermin.enrich.k8s"):
        e = enricher()
    assert e.ready  # pods, services, ... are used; policies are simply absent
    assert enrich_one(e, "10.3.9.1", "10.9.9.9").src_k8s["pod.name"] == "p"
    assert any("cannot list /apis/networking.k8s.io/v1/networkpolicies (HTTP 403)"
               in r.getMessage() for r in caplog.records)


def test_relist_after_410_event_succeeds_at_first_try(api, enricher):
    """After a 410 ERROR event (read before the stream's final chunk) the relist works at the
    first attempt: no garbled response from a reused connection, no extra error."""
    e = enricher()
    errors = e.stats.events.get(("pod", "error"), 0)
    api.compact()
    api.drop_watches()  # reconnect from an expired resourceVersion -> ERROR 410 -> relist
    wait_for(lambda: e.stats.events.get(("pod", "relist"), 0) >= 1, what="relist")
    api.add("pods", pod("after", "default", ["10.3.10.1"]))
    wait_for(lambda: enrich_one(e, "10.3.10.1", "10.9.9.9").src_k8s.get("pod.name") == "after")
    # only the dropped connection itself counted as an error, not a garbled relist
    assert e.stats.events.get(("pod", "error"), 0) == errors + 1
