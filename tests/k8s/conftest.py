"""Fixtures: a Kubernetes API test server, a kubeconfig pointing at it, and enricher helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.k8s.apiserver import ApiServer, write_kubeconfig
from tests.k8s.objects import namespace

from mermin.config.k8s import AttributesConfig, InformerConfig
from mermin.enrich import K8sEnricher
from mermin.flows.record import FlowReport, SpanKind


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer(bookmark_interval=0.2) as server:
        for ns in ("default", "kube-system", "prod", "dev"):
            server.add("namespaces", namespace(ns, {"env": ns}))
        yield server


@pytest.fixture
def kubeconfig(api: ApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", api.url, api.token)


@pytest.fixture
def enricher(kubeconfig: Path) -> Iterator[Callable[..., K8sEnricher]]:
    """`enricher(informer=dict(...), attributes=dict(...), wait=True)` -> started enricher."""
    made: list[K8sEnricher] = []

    def make(informer: dict[str, Any] | None = None, attributes: dict[str, Any] | None = None,
             wait: bool = True) -> K8sEnricher:
        icfg = InformerConfig.model_validate({"kubeconfig_path": str(kubeconfig),
                                              "informers_sync_timeout": "10s",
                                              **(informer or {})})
        acfg = AttributesConfig.model_validate(attributes or {})
        e = K8sEnricher(icfg, acfg, min_backoff=0.05, max_backoff=0.5)
        made.append(e)
        e.start(wait=wait)
        return e

    yield make
    for e in made:
        e.stop()


def report(src: str, dst: str, sport: int | None = 40000, dport: int | None = 80,
           proto: int = 6) -> FlowReport:
    return FlowReport(trace_id=b"\0" * 16, span_id=b"\0" * 8, start_ns=0, end_ns=0,
                      kind=SpanKind.INTERNAL, community_id="", direction="forward",
                      end_reason="active_timeout", ip_version=6 if ":" in src else 4,
                      protocol=proto, src_addr=src, dst_addr=dst, src_port=sport, dst_port=dport)


def enrich_one(e: K8sEnricher, src: str, dst: str, sport: int | None = 40000,
               dport: int | None = 80, proto: int = 6) -> FlowReport:
    r = report(src, dst, sport, dport, proto)
    e.enrich([r])
    return r


def wait_for(cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
