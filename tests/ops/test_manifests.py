"""Plain manifests (`mermin k8s manifests`, examples/manifests/mermin.yaml)."""

from __future__ import annotations

import yaml
from tests.ops.chart_helpers import REPO, by_kind, validate_all

from mermin import deploy
from mermin.cli import main as mermin_main

EXAMPLE = REPO / "examples" / "manifests" / "mermin.yaml"


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_example_file_is_the_current_chart_render():
    fresh = deploy.manifests(use_helm=True)
    assert EXAMPLE.read_text() == fresh, (
        "examples/manifests/mermin.yaml is stale: regenerate with "
        "`uv run mermin k8s manifests > examples/manifests/mermin.yaml`"
    )


def test_example_file_is_valid():
    docs = _docs(EXAMPLE.read_text())
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ClusterRole",
                                         "ClusterRoleBinding", "ConfigMap", "DaemonSet"]
    validate_all(docs)
    ns = by_kind(docs)["Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for doc in docs:
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "mermin"


def test_cli_prints_retargeted_manifests(capsys):
    assert mermin_main(["k8s", "manifests", "--namespace", "netobs",
                        "--image", "registry.example.com:5000/team/mermin:2.0.1"]) == 0
    out = capsys.readouterr().out
    docs = _docs(out)
    validate_all(docs)
    kinds = by_kind(docs)
    assert kinds["Namespace"]["metadata"]["name"] == "netobs"
    assert kinds["ClusterRoleBinding"]["subjects"][0]["namespace"] == "netobs"
    (agent,) = kinds["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    assert agent["image"] == "registry.example.com:5000/team/mermin:2.0.1"
    assert all(d["metadata"].get("namespace", "netobs") == "netobs" for d in docs)


def test_helm_and_prerendered_paths_agree():
    for namespace, image in (("mermin", None), ("obs", "r.example/m:1"),
                             ("obs", "r.example/m@sha256:" + "b" * 64)):
        helm_out = deploy.manifests(namespace, image, use_helm=True)
        file_out = deploy.manifests(namespace, image, use_helm=False)
        assert helm_out == file_out, (namespace, image)
