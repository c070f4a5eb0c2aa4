"""`mermin k8s manifests`: plain Kubernetes manifests for users without Helm.

The manifests are the Helm chart (charts/mermin) rendered with its default values, preceded by
a Namespace labelled for the `privileged` Pod Security level (the agent needs host networking,
a hostPath and capabilities). With the Helm engine available (the `helm-python-sdk` package, a
development dependency) the chart is rendered on the spot; otherwise the pre-rendered copy
(examples/manifests/mermin.yaml, installed in the image as /usr/share/mermin/manifests/) is
adapted to the requested namespace and image. Both give the same output (a test checks it).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mermin.errors import MerminError

__all__ = [
    "DEFAULT_NAMESPACE",
    "RELEASE",
    "adapt",
    "find_chart",
    "find_rendered",
    "manifests",
    "namespace_object",
    "render_chart",
    "run",
    "to_yaml",
]

RELEASE = "mermin"
DEFAULT_NAMESPACE = "mermin"
_REPO = Path(__file__).resolve().parents[2]
_SHARE = Path("/usr/share/mermin")
# the order Helm installs kinds in (a subset), so dependencies exist before their users
_KIND_ORDER = ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
               "Service", "DaemonSet"]
_HEADER = (
    "# Mermin: plain Kubernetes manifests, rendered from charts/mermin with default values.\n"
    "# Regenerate with `mermin k8s manifests [--namespace NS] [--image IMAGE]`;\n"
    "# see docs/operations.md for what each object does and the values you may want to change.\n"
)


def find_chart() -> Path | None:
    """The chart directory: $MERMIN_CHART_DIR, the source tree, or /usr/share/mermin/charts."""
    candidates = [os.environ.get("MERMIN_CHART_DIR"), _REPO / "charts" / "mermin",
                  _SHARE / "charts" / "mermin"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "Chart.yaml").is_file():
            return Path(candidate)
    return None


def find_rendered() -> Path | None:
    """The pre-rendered manifests shipped with the source tree or the image."""
    for candidate in (_REPO / "examples" / "manifests" / "mermin.yaml",
                      _SHARE / "manifests" / "mermin.yaml"):
        if candidate.is_file():
            return candidate
    return None


def _sort(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(doc: dict[str, Any]) -> tuple[int, str]:
        kind = doc.get("kind", "")
        rank = _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
        return rank, doc.get("metadata", {}).get("name", "")

    return sorted(docs, key=key)


def render_chart(values: Mapping[str, Any] | None = None, *, namespace: str = DEFAULT_NAMESPACE,
                 release: str = RELEASE, chart: Path | None = None) -> list[dict[str, Any]]:
    """Render the chart with the real Helm engine; returns the objects in install order."""
    try:
        import helm_python as helm
    except ImportError as exc:  # pragma: no cover - exercised where the SDK is absent
        raise MerminError("the Helm engine (helm-python-sdk) is not installed") from exc
    chart = chart or find_chart()
    if chart is None:
        raise MerminError("chart not found: set MERMIN_CHART_DIR to the charts/mermin directory")
    try:
        with helm.Chart.load(str(chart)) as loaded:
            rendered = loaded.render(dict(values or {}), name=release, namespace=namespace,
                                     is_install=True)
    except helm.HelmError as exc:
        raise MerminError(f"rendering {chart} failed: {exc}") from exc
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return _sort(docs)


def namespace_object(namespace: str) -> dict[str, Any]:
    """The Namespace the plain manifests create, at the Pod Security level the agent needs."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {
                "app.kubernetes.io/name": "mermin",
                # hostNetwork, a hostPath and added capabilities are beyond "baseline"
                "pod-security.kubernetes.io/enforce": "privileged",
                "pod-security.kubernetes.io/warn": "privileged",
            },
        },
    }


def _split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    head, _, tail = image.rpartition(":")
    if head and "/" not in tail:
        return head, tail
    return image, ""


def adapt(docs: list[dict[str, Any]], namespace: str, image: str | None) -> list[dict[str, Any]]:
    """Re-target pre-rendered objects to another namespace and image (the no-Helm path)."""
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        meta = doc.setdefault("metadata", {})
        if doc["kind"] == "Namespace":
            meta["name"] = namespace
        elif "namespace" in meta:
            meta["namespace"] = namespace
        for subject in doc.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
        if image and doc["kind"] == "DaemonSet":
            repo, tag = _split_image(image)
            ref = f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag or 'latest'}"
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["name"] == "mermin":
                    container["image"] = ref
        out.append(doc)
    return out


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (the config file) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """Multi-document YAML with the header comment."""
    body = "---\n".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100) for doc in docs
    )
    return _HEADER + "---\n" + body


def manifests(namespace: str = DEFAULT_NAMESPACE, image: str | None = None, *,
              use_helm: bool | None = None) -> str:
    """The plain manifests as multi-document YAML.

    use_helm: True forces the Helm engine, False the pre-rendered file, None picks Helm when
    it is installed and the chart is found.
    """
    if use_helm is None:
        try:
            import helm_python  # noqa: F401
            use_helm = find_chart() is not None
        except ImportError:
            use_helm = False
    if use_helm:
        values: dict[str, Any] = {}
        if image:
            repo, tag = _split_image(image)
            values["image"] = {"repository": repo, "tag": tag or "latest"}
        docs = [namespace_object(namespace), *render_chart(values, namespace=namespace)]
        return to_yaml(_sort(docs))
    rendered = find_rendered()
    if rendered is None:
        raise MerminError(
            "no chart and no pre-rendered manifests found: install helm-python-sdk or set "
            "MERMIN_CHART_DIR"
        )
    docs = [doc for doc in yaml.safe_load_all(rendered.read_text()) if doc]
    return to_yaml(adapt(docs, namespace, image))


def run(args: argparse.Namespace) -> int:
    """`mermin k8s manifests [--namespace NS] [--image IMAGE]`: print the manifests."""
    if getattr(args, "k8s_command", "manifests") != "manifests":
        raise MerminError(f"unknown k8s command {args.k8s_command!r}")
    sys.stdout.write(manifests(args.namespace, args.image))
    return 0
