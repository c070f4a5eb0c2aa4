"""Rendering the chart with the real Helm engine and validating objects (shared by ops tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from mermin import deploy

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mermin"
# Kubernetes versions the objects must be valid for: the chart's floor era and a recent one.
KUBE_VERSIONS = ("1.30.0", "1.35.0")


def render(values: dict[str, Any] | None = None, namespace: str = "observability",
           release: str = "mermin") -> list[dict[str, Any]]:
    """Render charts/mermin (Helm engine via helm-python-sdk); objects in install order."""
    return deploy.render_chart(values or {}, namespace=namespace, release=release, chart=CHART)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{kind: object}; the chart renders at most one object of each kind."""
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in out, f"two {doc['kind']} objects"
        out[doc["kind"]] = doc
    return out


def validate_all(docs: list[dict[str, Any]]) -> None:
    """Every object is valid against the strict Kubernetes schemas of each KUBE_VERSIONS."""
    assert docs
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                raise AssertionError(
                    f"{doc['kind']}/{doc['metadata'].get('name')} invalid for {version}: "
                    f"{err.message}\n{yaml.safe_dump(doc)}"
                ) from err


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The agent container of the DaemonSet."""
    spec = by_kind(docs)["DaemonSet"]["spec"]["template"]["spec"]
    (agent,) = [c for c in spec["containers"] if c["name"] == "mermin"]
    return agent


def config_text(docs: list[dict[str, Any]]) -> tuple[str, str]:
    """(file name, content) of the config in the ConfigMap."""
    data = by_kind(docs)["ConfigMap"]["data"]
    assert len(data) == 1
    return next(iter(data.items()))
