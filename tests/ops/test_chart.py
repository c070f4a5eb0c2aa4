"""The Helm chart, rendered by the real Helm engine and validated against Kubernetes schemas."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from tests.ops.chart_helpers import CHART, by_kind, config_text, container, render, validate_all

from mermin.cli import main as mermin_main
from mermin.errors import MerminError

# Exactly what the Kubernetes enrichment reads (docs/kubernetes.md), list+watch only.
EXPECTED_RBAC = {
    "": {"pods", "services", "nodes", "namespaces"},
    "discovery.k8s.io": {"endpointslices"},
    "apps": {"replicasets", "deployments", "statefulsets", "daemonsets"},
    "batch": {"jobs", "cronjobs"},
    "networking.k8s.io": {"networkpolicies"},
}

NON_DEFAULT = {
    "image": {"repository": "registry.example.com/net/mermin", "tag": "9.9.9",
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "fullnameOverride": "flows",
    "serviceAccount": {"create": True, "name": "flow-agent",
                       "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
    "rbac": {"create": True, "extraRules": [
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"],
         "verbs": ["get", "list", "watch"]}]},
    "hostNetwork": False,
    "ports": {"metrics": 9464, "health": 8081},
    "prometheusScrapeAnnotations": False,
    "config": {"fileName": "agent.yaml", "restartOnConfigChange": True,
               "content": "log_level: debug\ninternal:\n  metrics:\n"
                          "    port: {{ .Values.ports.metrics }}\n"
                          "  server:\n    port: {{ .Values.ports.health }}\n"},
    "extraArgs": ["--log-level", "debug"],
    "env": [{"name": "MERMIN_EXTRA", "value": "1"}],
    "extraVolumes": [{"name": "certs", "secret": {"secretName": "otlp-tls"}}],
    "extraVolumeMounts": [{"name": "certs", "mountPath": "/etc/mermin/tls", "readOnly": True}],
    "extraObjects": [{"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": "{{ .Release.Name }}-metrics",
                                   "namespace": "{{ .Release.Namespace }}"},
                      "spec": {"clusterIP": "None", "ports": [{"name": "metrics", "port": 9464}],
                               "selector": {"app.kubernetes.io/name": "mermin"}}}],
    "bpffs": {"enabled": True, "hostPath": "/run/bpf", "mountPropagation": "None"},
    "securityContext": {"privileged": False, "capabilities": ["BPF", "PERFMON", "NET_ADMIN"],
                        "extraCapabilities": ["SYS_RESOURCE"], "readOnlyRootFilesystem": True},
    "resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                  "limits": {"cpu": "1", "memory": "1Gi"}},
    "probes": {"liveness": {"periodSeconds": 20, "failureThreshold": 3},
               "readiness": {"periodSeconds": 10}, "startup": {"failureThreshold": 100}},
    "terminationGracePeriodSeconds": 45,
    "priorityClassName": "system-node-critical",
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "net",
                     "effect": "NoSchedule"}],
    "nodeSelector": {"kubernetes.io/os": "linux", "pool": "net"},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]}}},
    "podAnnotations": {"team": "netops"},
    "podLabels": {"tier": "infra"},
}


@pytest.fixture(scope="module")
def default_docs():
    return render()


@pytest.fixture(scope="module")
def custom_docs():
    return render(NON_DEFAULT, namespace="netops", release="prod")


# --- helm lint level -------------------------------------------------------------------------
def test_chart_metadata():
    with helm.Chart.load(str(CHART)) as chart:
        meta = chart.metadata
        assert chart.name == "mermin"
        assert re.fullmatch(r"\d+\.\d+\.\d+", chart.version)
        assert meta["apiVersion"] == "v2" and meta.get("appVersion") and meta.get("description")
        assert chart.schema is not None
        chart.validate_schema(chart.values)  # defaults satisfy values.schema.json
    from mermin import __version__
    assert meta["appVersion"] == __version__  # image tag defaults to the agent's version


@pytest.mark.parametrize("values", [{}, NON_DEFAULT, {"hostNetwork": False},
                                    {"securityContext": {"privileged": True}}],
                         ids=["default", "non-default", "pod-netns", "privileged"])
def test_helm_lint_strict_is_clean(values):
    report = helm.lint(str(CHART), values, strict=True, namespace="mermin",
                       kube_version="v1.30.0")
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize(("values", "message"), [
    ({"image": {"repository": ""}}, "repository"),
    ({"ports": {"metrics": 70000, "health": 8080}}, "metrics"),
    ({"securityContext": {"capabilities": ["cap_bpf"]}}, "capabilities"),
    ({"bogus": 1}, "bogus"),
    ({"config": {"fileName": "config.toml", "content": "x"}}, "fileName"),
])
def test_schema_rejects_bad_values(values, message):
    with pytest.raises(MerminError, match=rf"(?s)schema.*{message}"):
        render(values)


def test_required_service_account_name():
    with pytest.raises(MerminError, match=r"serviceAccount\.name is required"):
        render({"serviceAccount": {"create": False, "name": ""}})
    docs = render({"serviceAccount": {"create": False, "name": "existing"}})
    assert "ServiceAccount" not in by_kind(docs)
    assert by_kind(docs)["DaemonSet"]["spec"]["template"]["spec"]["serviceAccountName"] == \
        "existing"


# --- schema validation of every rendered object ----------------------------------------------
def test_default_render_is_valid(default_docs):
    kinds = [d["kind"] for d in default_docs]
    assert kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                     "DaemonSet"]
    validate_all(default_docs)


def test_non_default_render_is_valid(custom_docs):
    assert [d["kind"] for d in custom_docs] == [
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Service",
        "DaemonSet"]
    validate_all(custom_docs)


@pytest.mark.parametrize("values", [
    {"securityContext": {"privileged": True}},
    {"rbac": {"create": False}, "bpffs": {"enabled": False}, "resources": {}},
    {"image": {"repository": "r.example/m", "tag": "sha256:" + "a" * 64}},
], ids=["privileged", "minimal", "digest"])
def test_other_variants_are_valid(values):
    docs = render(values)
    validate_all(docs)


def test_invalid_object_is_caught_by_validation(default_docs):
    """The validator is strict: a typo in a field name fails (guards the guard)."""
    ds = yaml.safe_load(yaml.safe_dump(by_kind(default_docs)["DaemonSet"]))
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(AssertionError, match="hostNetwrok"):
        validate_all([ds])


# --- consistency -----------------------------------------------------------------------------
def test_labels_consistent(default_docs, custom_docs):
    for docs, release in ((default_docs, "mermin"), (custom_docs, "prod")):
        owned = [d for d in docs if d["kind"] != "Service"]  # extraObjects carry their own
        for doc in owned:
            labels = doc["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "mermin"
            assert labels["app.kubernetes.io/instance"] == release
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["helm.sh/chart"].startswith("mermin-")
        ds = by_kind(docs)["DaemonSet"]
        selector = ds["spec"]["selector"]["matchLabels"]
        pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert "app.kubernetes.io/version" not in selector  # selector must stay stable


def test_names_and_references(custom_docs):
    kinds = by_kind(custom_docs)
    assert kinds["ServiceAccount"]["metadata"]["name"] == "flow-agent"
    binding = kinds["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole",
                                  "name": kinds["ClusterRole"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flow-agent",
                                    "namespace": "netops"}]
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "flow-agent"
    assert kinds["DaemonSet"]["metadata"]["name"] == "flows"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    for doc in custom_docs:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "netops"


def test_ports_probes_and_config_agree(default_docs, custom_docs):
    for docs, metrics, health in ((default_docs, 10260, 10261), (custom_docs, 9464, 8081)):
        agent = container(docs)
        ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
        assert ports == {"metrics": metrics, "health": health}
        assert agent["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
        assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert agent["startupProbe"]["httpGet"] == {"path": "/startup", "port": "health"}
        _, text = config_text(docs)
        assert str(metrics) in text and str(health) in text


def test_default_pod_spec(default_docs):
    ds = by_kind(default_docs)["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    agent = container(default_docs)
    assert agent["args"] == ["run", "--config", "/etc/mermin/config.hcl"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is False
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    assert mounts["bpffs"] == {"name": "bpffs", "mountPath": "/sys/fs/bpf",
                               "mountPropagation": "HostToContainer"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["bpffs"]["hostPath"] == {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"}
    assert agent["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "10260"


def test_non_default_pod_spec(custom_docs):
    pod = by_kind(custom_docs)["DaemonSet"]["spec"]["template"]
    spec = pod["spec"]
    agent = container(custom_docs)
    assert agent["image"] == "registry.example.com/net/mermin:9.9.9"
    assert agent["imagePullPolicy"] == "Always"
    assert agent["args"] == ["run", "--config", "/etc/mermin/agent.yaml", "--log-level", "debug"]
    assert {"name": "MERMIN_EXTRA", "value": "1"} in agent["env"]
    assert {"name": "certs", "mountPath": "/etc/mermin/tls", "readOnly": True} in \
        agent["volumeMounts"]
    assert {"name": "certs", "secret": {"secretName": "otlp-tls"}} in spec["volumes"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["terminationGracePeriodSeconds"] == 45
    assert spec["tolerations"] == NON_DEFAULT["tolerations"]
    assert spec["nodeSelector"] == NON_DEFAULT["nodeSelector"]
    assert spec["affinity"] == NON_DEFAULT["affinity"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["labels"]["tier"] == "infra"
    assert pod["metadata"]["annotations"]["team"] == "netops"
    assert "prometheus.io/scrape" not in pod["metadata"]["annotations"]
    assert agent["resources"] == NON_DEFAULT["resources"]
    assert agent["livenessProbe"]["periodSeconds"] == 20
    assert agent["startupProbe"]["failureThreshold"] == 100
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert {"name": "bpffs", "hostPath": {"path": "/run/bpf", "type": "DirectoryOrCreate"}} in \
        spec["volumes"]


# --- least privilege -------------------------------------------------------------------------
def _security(docs):
    return container(docs)["securityContext"]


def test_default_least_privilege(default_docs):
    sc = _security(default_docs)
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON", "NET_ADMIN"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsUser"] == 0  # capabilities need root: Kubernetes sets no ambient caps
    pod = by_kind(default_docs)["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["hostPID"] is False


def test_pod_netns_mode_adds_exactly_setns_privileges():
    docs = render({"hostNetwork": False})
    sc = _security(docs)
    assert sc["capabilities"]["add"] == ["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]
    pod = by_kind(docs)["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is False
    # the API server rejects allowPrivilegeEscalation=false together with CAP_SYS_ADMIN
    assert "allowPrivilegeEscalation" not in sc


def test_privileged_switch():
    sc = _security(render({"securityContext": {"privileged": True}}))
    assert sc["privileged"] is True
    assert "capabilities" not in sc and "allowPrivilegeEscalation" not in sc


def test_api_server_security_rules_hold_for_every_variant(default_docs, custom_docs):
    """Rules the API server enforces beyond the JSON schema (validation.go)."""
    variants = [default_docs, custom_docs, render({"securityContext": {"privileged": True}}),
                render({"securityContext": {"extraCapabilities": ["SYS_ADMIN"]}})]
    for docs in variants:
        sc = _security(docs)
        caps = set(sc.get("capabilities", {}).get("add", []))
        if sc.get("allowPrivilegeEscalation") is False:
            assert not sc.get("privileged") and "SYS_ADMIN" not in caps
        mounts = container(docs)["volumeMounts"]
        for mount in mounts:
            if mount.get("mountPropagation") == "Bidirectional":
                assert sc.get("privileged") is True


def test_rbac_is_read_only_and_exact(default_docs):
    role = by_kind(default_docs)["ClusterRole"]
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert set(rule["verbs"]) == {"list", "watch"}, rule  # the agent never gets or writes
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            granted.setdefault(group, set()).update(rule["resources"])
    assert granted == EXPECTED_RBAC
    assert not any("secrets" in r for r in granted.values())


def test_rbac_matches_what_the_enricher_watches():
    """The ClusterRole grants exactly the kinds mermin.enrich.k8s can watch, nothing more."""
    from mermin.enrich.k8s.resources import RESOURCES

    watched: dict[str, set[str]] = {}
    for resource in RESOURCES.values():
        watched.setdefault(resource.group, set()).add(resource.plural)
    assert watched == EXPECTED_RBAC


def _grants(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_matches_kubernetes_doc(default_docs):
    """The ClusterRole is exactly the rules block of docs/kubernetes.md (k8s engineer's)."""
    doc = CHART.parents[1] / "docs" / "kubernetes.md"
    text = doc.read_text()
    section = text[text.index("## RBAC"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    documented = yaml.safe_load(block[: block.index("```")])["rules"]
    role = by_kind(default_docs)["ClusterRole"]
    assert _grants(role["rules"]) == _grants(documented)


def test_rbac_disabled():
    kinds = {d["kind"] for d in render({"rbac": {"create": False}})}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds


# --- config ----------------------------------------------------------------------------------
def _checksum(docs) -> str:
    return by_kind(docs)["DaemonSet"]["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"]


def test_checksum_follows_config(default_docs):
    name, text = config_text(default_docs)
    assert name == "config.hcl"
    assert _checksum(default_docs) == hashlib.sha256(text.encode()).hexdigest() or \
        _checksum(default_docs) == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    changed = render({"config": {"content": text.replace('"info"', '"debug"')}})
    assert _checksum(changed) != _checksum(default_docs)
    ports = render({"ports": {"metrics": 9100, "health": 9101}})  # templated into the config
    assert _checksum(ports) != _checksum(default_docs)
    unrelated = render({"resources": {}, "podLabels": {"x": "y"}})
    assert _checksum(unrelated) == _checksum(default_docs)
    off = render({"config": {"restartOnConfigChange": False}})
    assert "checksum/config" not in by_kind(off)["DaemonSet"]["spec"]["template"]["metadata"][
        "annotations"]


@pytest.mark.parametrize("which", ["default", "non-default"])
def test_rendered_config_passes_mermin_config_check(which, default_docs, custom_docs,
                                                    tmp_path: Path, capsys):
    docs = default_docs if which == "default" else custom_docs
    name, text = config_text(docs)
    path = tmp_path / name
    path.write_text(text)
    code = mermin_main(["config", "check", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    bad = tmp_path / name
    bad.write_text(text + ("\nno_such_key = 1\n" if name.endswith(".hcl") else "no_such_key: 1\n"))
    assert mermin_main(["config", "check", str(bad)]) != 0


def test_hcl_config_must_serve_the_probed_ports():
    """A config that would leave the probes pointing at nothing fails the render."""
    bare = {"config": {"content": 'log_level = "info"\n'}}
    with pytest.raises(MerminError, match=r"serves metrics on port 10250 but ports\.metrics"):
        render(bare)  # 10250 is also the kubelet's port under hostNetwork
    ok = render({**bare, "ports": {"metrics": 10250, "health": 8080}})  # agent defaults
    validate_all(ok)
    wrong = {"config": {"content": 'internal "metrics" {\n  port = 10260\n}\n'
                                   'internal "server" {\n  port = 9999\n}\n'}}
    with pytest.raises(MerminError, match=r"serves server on port 9999 but ports\.health is"):
        render(wrong)
