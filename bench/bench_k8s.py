"""Kubernetes enrichment benchmark: a large cluster served by the API test server.

    uv run python bench/bench_k8s.py [--pods 10000 --services 2000 --nodes 500 --slices 10000]
                                     [--policies 200] [--events 20000] [--tracemalloc]

The API server (tests/k8s/apiserver.py) runs in a child process so its memory and CPU are not
counted; the agent side runs here with the real `kubernetes` client and a kubeconfig (token).
Measured: initial sync time (start -> every kind listed and indexed), RSS growth for the caches
(baseline taken after the client library is imported and the client built), uncached lookups/s,
enrichment cost per report when cached (with NetworkPolicies present), and watch events/s
applied (MODIFIED pods streamed by the server). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mermin.config.k8s import AttributesConfig, InformerConfig
from mermin.enrich.k8s import K8sEnricher, KubeClient
from mermin.flows.record import FlowReport, SpanKind


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pod_ip(i: int) -> str:
    return f"10.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}"


def _pod(i: int, ns: str, node: str, rs: dict, hash_: str) -> dict:
    """A pod about as large as a real one (~2.5 KB of JSON)."""
    name = f"{rs['metadata']['name']}-{uuid.uuid4().hex[:5]}"
    return {
        "metadata": {
            "name": name, "generateName": rs["metadata"]["name"] + "-", "namespace": ns,
            "uid": str(uuid.uuid4()), "creationTimestamp": "2026-11-01T10:00:00Z",
            "labels": {"app": rs["metadata"]["name"][:-6], "pod-template-hash": hash_,
                       "team": f"team-{i // 10 % 13}"},  # same in every replica
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-01T09:59:00Z",
                            "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "nodeName": node, "serviceAccountName": "default", "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "app", "image": "registry.example.com/app:1.2.3",
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {
                            "apiVersion": "v1", "fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                              "requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "readOnly": True,
                                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300},
                            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
        },
        "status": {
            "phase": "Running", "hostIP": "192.168.0.1", "podIP": pod_ip(i),
            "podIPs": [{"ip": pod_ip(i)}], "startTime": "2026-11-01T10:00:01Z",
            "qosClass": "Burstable",
            "conditions": [{"type": t, "status": "True",
                            "lastTransitionTime": "2026-11-01T10:00:05Z"}
                           for t in ("Initialized", "Ready", "ContainersReady",
                                     "PodScheduled")],
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                   "image": "registry.example.com/app:1.2.3",
                                   "imageID": "registry.example.com/app@sha256:" + "ab" * 32,
                                   "containerID": "containerd://" + uuid.uuid4().hex * 2,
                                   "started": True, "state": {"running": {
                                       "startedAt": "2026-11-01T10:00:04Z"}}}],
        },
    }


def build_cluster(server, args) -> list[dict]:
    namespaces = [f"ns-{i}" for i in range(50)]
    for ns in [*namespaces, "kube-system", "default"]:
        server.add("namespaces", {"metadata": {"name": ns, "labels": {
            "kubernetes.io/metadata.name": ns, "env": "prod" if ns.endswith("1") else "dev"}}})
    for i in range(args.nodes):
        server.add("nodes", {"metadata": {"name": f"node-{i}", "labels": {"zone": f"z{i % 3}"}},
                             "status": {"addresses": [
                                 {"type": "InternalIP", "address": f"192.168.{i // 256}.{i % 256}"},
                                 {"type": "Hostname", "address": f"node-{i}"}]}})
    pods = []
    per_rs = 10
    for d in range(args.pods // per_rs):
        ns = namespaces[d % len(namespaces)]
        dep = server.add("deployments", {"metadata": {"name": f"app-{d}", "namespace": ns},
                                         "spec": {"replicas": per_rs}})
        hash_ = uuid.uuid4().hex[:5]
        rs = server.add("replicasets", {"metadata": {
            "name": f"app-{d}-{hash_}", "namespace": ns, "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": f"app-{d}",
                "uid": dep["metadata"]["uid"], "controller": True}]}})
        for k in range(per_rs):
            i = d * per_rs + k
            pods.append(server.add("pods", _pod(i, ns, f"node-{i % args.nodes}", rs, hash_)))
    for s in range(args.services):
        ns = namespaces[s % len(namespaces)]
        server.add("services", {"metadata": {"name": f"svc-{s}", "namespace": ns},
                                "spec": {"clusterIP": f"10.96.{s // 256}.{s % 256}",
                                         "clusterIPs": [f"10.96.{s // 256}.{s % 256}"],
                                         "selector": {"app": f"app-{s}"},
                                         "ports": [{"port": 80, "targetPort": 8080}]}})
    for e in range(args.slices):
        p = pods[e % len(pods)]
        meta = p["metadata"]
        server.add("endpointslices", {
            "metadata": {"name": f"svc-{e % args.services}-{e}", "namespace": meta["namespace"],
                         "labels": {"kubernetes.io/service-name": f"svc-{e % args.services}"}},
            "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [p["status"]["podIP"]], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": meta["name"],
                                         "namespace": meta["namespace"], "uid": meta["uid"]}}]})
    for n in range(args.policies):
        ns = namespaces[n % len(namespaces)]
        server.add("networkpolicies", {"metadata": {"name": f"pol-{n}", "namespace": ns},
                                       "spec": {"podSelector": {"matchLabels": {
                                           "team": f"team-{n % 13}"}},
                                           "ingress": [{"from": [{"namespaceSelector": {
                                               "matchLabels": {"env": "prod"}}}],
                                               "ports": [{"port": 8080}]}]}})
    return pods


def server_main(conn, args) -> None:
    from tests.k8s.apiserver import ApiServer

    with ApiServer(bookmark_interval=5.0) as server:
        started = time.monotonic()
        pods = build_cluster(server, args)
        conn.send((server.url, server.token, time.monotonic() - started))
        while True:
            cmd = conn.recv()
            if cmd == "stop":
                return
            if cmd[0] == "churn":  # relabel pods: relevant MODIFIED events
                t0 = time.monotonic()
                for k in range(cmd[1]):
                    p = pods[k % len(pods)]
                    p["metadata"]["labels"]["version"] = f"v{k}"
                    server.modify("pods", p)
                conn.send(time.monotonic() - t0)


def report(src: str, dst: str, sport: int, dport: int) -> FlowReport:
    return FlowReport(trace_id=b"\0" * 16, span_id=b"\0" * 8, start_ns=0, end_ns=0,
                      kind=SpanKind.INTERNAL, community_id="", direction="forward",
                      end_reason="active_timeout", ip_version=4, protocol=6, src_addr=src,
                      dst_addr=dst, src_port=sport, dst_port=dport)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--services", type=int, default=2_000)
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--slices", type=int, default=10_000)
    ap.add_argument("--policies", type=int, default=200)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--reports", type=int, default=100_000)
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also measure retained Python heap of the caches (slower sync)")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=server_main, args=(child, args), daemon=True)
    proc.start()
    url, token, build_s = parent.recv()
    tmp = Path(tempfile.mkdtemp(prefix="mermin-bench-k8s-"))
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(
        f'{{"apiVersion":"v1","kind":"Config","current-context":"b","clusters":[{{"name":"b",'
        f'"cluster":{{"server":"{url}"}}}}],"users":[{{"name":"b","user":{{"token":"{token}"}}'
        f'}}],"contexts":[{{"name":"b","context":{{"cluster":"b","user":"b"}}}}]}}')
    results: list[tuple[str, str, str]] = []
    try:
        client = KubeClient(str(kubeconfig))
        informer = InformerConfig(kubeconfig_path=str(kubeconfig), informers_sync_timeout=120)
        enricher = K8sEnricher(informer, AttributesConfig(), client=client)
        gc.collect()
        base = rss_mb()
        if args.tracemalloc:
            tracemalloc.start()
        t0 = time.perf_counter()
        enricher.start()
        sync_s = time.perf_counter() - t0
        assert enricher.ready, "not synced"
        gc.collect()
        heap_mb = None
        if args.tracemalloc:
            heap_mb = tracemalloc.get_traced_memory()[0] / 2**20
            if os.environ.get("BENCH_TOP"):
                for stat in tracemalloc.take_snapshot().statistics("lineno")[:15]:
                    print(stat, file=sys.stderr)
            tracemalloc.stop()
        cache_mb = rss_mb() - base
        st = enricher.state
        counts = (f"{len(st.pods)} pods, {len(st.services)} services, {len(st.nodes)} nodes, "
                  f"{len(st.slices)} slices, {len(st.owners)} owners, {len(st.policies)} policies")
        results.append(("initial sync (list + index, all kinds)", f"{sync_s:.2f} s",
                        "target < 5 s"))
        results.append(("RSS growth for the caches", f"{cache_mb:.1f} MB", "target < 80 MB"))
        if heap_mb is not None:
            results.append(("  of which live Python heap (tracemalloc)", f"{heap_mb:.1f} MB", ""))
        results.append(("addresses indexed", f"{len(st.index)}", counts))

        ips = [pod_ip(i) for i in range(args.pods)]
        attributor = enricher._src
        t0 = time.perf_counter()
        for ip in ips:
            attributor.lookup(ip)
        lookup_s = time.perf_counter() - t0
        results.append(("uncached lookups (pod address -> attributes)",
                        f"{len(ips) / lookup_s:,.0f} /s",
                        f"{lookup_s / len(ips) * 1e6:.1f} µs each"))

        # the client's share alone: parse + project + apply of watch lines, no network
        pod_informer = next(i for i in enricher.informers if i.kind == "pod")
        lines = []
        for k, p in enumerate(list(st.pods.values())[:5000]):
            lines.append(json.dumps({"type": "MODIFIED", "object": _pod(
                k, p.namespace, p.node, {"metadata": {"name": "bench-x0000", "uid": "u"}},
                "abcde") | {"metadata": {"name": p.name, "namespace": p.namespace,
                                          "uid": p.uid, "resourceVersion": "1",
                                          "labels": {"version": f"w{k}"}}}}).encode())
        before = st.changes
        t0 = time.perf_counter()
        for line in lines:
            pod_informer._event(json.loads(line))
        apply_s = time.perf_counter() - t0
        results.append(("watch event apply, client side only (json + project + index)",
                        f"{len(lines) / apply_s:,.0f} /s",
                        f"{st.changes - before} of {len(lines)} pod MODIFIED lines applied"))
        rng = random.Random(1)
        pairs = [(rng.choice(ips), rng.choice(ips)) for _ in range(5_000)]
        reports = [report(s, d, 30000 + i % 20000, 8080) for i, (s, d) in
                   enumerate(pairs[k % len(pairs)] for k in range(args.reports))]
        enricher.enrich(reports)  # warm the caches (endpoints and policy verdicts)
        named = sum(1 for r in reports if r.src_k8s and r.dst_k8s)
        with_policy = sum(1 for r in reports if r.policies_ingress)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            enricher.enrich(reports)
            best = min(best, time.perf_counter() - t0)
        results.append(("enrich() per report, cached (both ends + policies)",
                        f"{best / len(reports) * 1e6:.2f} µs",
                        f"target < 5 µs; {named}/{len(reports)} named, {with_policy} with "
                        "ingress policies"))

        before = st.changes
        t0 = time.perf_counter()
        parent.send(("churn", args.events))
        server_s = parent.recv()
        deadline = time.monotonic() + 120
        while st.changes < before + args.events and time.monotonic() < deadline:
            time.sleep(0.005)
        applied = st.changes - before
        watch_s = time.perf_counter() - t0
        results.append(("watch events applied (pod MODIFIED, relabel)",
                        f"{applied / watch_s:,.0f} /s",
                        f"{applied} events in {watch_s:.2f} s (server emitted them in "
                        f"{server_s:.2f} s)"))
        t0 = time.perf_counter()
        enricher.enrich(reports)
        results.append(("enrich() per report right after the churn (re-resolve)",
                        f"{(time.perf_counter() - t0) / len(reports) * 1e6:.2f} µs", ""))
        enricher.stop()
    finally:
        parent.send("stop")
        proc.join(10)
    print(f"cluster built by the server in {build_s:.1f} s; python {sys.version.split()[0]}")
    print("| measure | result | notes |\n|---|---|---|")
    for row in results:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
