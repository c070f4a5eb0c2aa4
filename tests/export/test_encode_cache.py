"""Caches of the column encoder never serve a stale encoding, and the gzip level setting."""

from __future__ import annotations

import dataclasses
import gzip
import zlib

import pytest
from pydantic import ValidationError
from tests.export.otlp_helpers import official_request, spans_of
from tests.export.samples import flow_reports, tcp_report
from tests.export.test_encode import RESOURCE

from mermin.config.export import OtlpConfig
from mermin.enrich.k8s.attributes import AttrMap
from mermin.export.encode import SpanEncoder
from mermin.export.http import HttpTransport, gzip_compressor


def _k8s_attrs(body: bytes) -> list[dict[str, str]]:
    return [
        {kv.key: kv.value.string_value for kv in s.attributes if kv.key.startswith("source.k8s.")}
        for s in spans_of(body)
    ]


def test_changed_plain_dict_is_encoded_again() -> None:
    r = tcp_report(1, shared=False)
    meta = dict(r.src_k8s)
    r.src_k8s = meta
    enc = SpanEncoder(RESOURCE)
    first = enc.encode([r])
    assert first == official_request([r], RESOURCE)
    meta["pod.name"] = "renamed"  # the same dict object, new content
    meta["pod.label.tier"] = "gold"
    second = enc.encode([r])
    assert second == official_request([r], RESOURCE)
    assert _k8s_attrs(second)[0]["source.k8s.pod.name"] == "renamed"
    assert _k8s_attrs(second)[0]["source.k8s.pod.label.tier"] == "gold"


def test_shared_attrmap_cached_by_identity() -> None:
    reports = flow_reports(200, seed=4)  # shared AttrMaps, as the Kubernetes enricher hands out
    enc = SpanEncoder(RESOURCE)
    assert enc.encode(reports) == official_request(reports, RESOURCE)
    col = enc._columns.src_k8s
    maps = {id(r.src_k8s): r.src_k8s for r in reports if r.src_k8s}
    assert set(col.by_id) == set(maps)  # every shared map cached by its id...
    assert all(any(m is ref for ref in col.refs) for m in maps.values())  # ...and kept alive
    # a new AttrMap with other content (e.g. the pod was relabelled) gets its own encoding
    r = next(r for r in reports if r.src_k8s)
    fresh = dataclasses.replace(r, src_k8s=AttrMap({**r.src_k8s, "pod.name": "new-pod"}))
    out = enc.encode([r, fresh])
    assert out == official_request([r, fresh], RESOURCE)
    names = [a["source.k8s.pod.name"] for a in _k8s_attrs(out)]
    assert names == [r.src_k8s["pod.name"], "new-pod"]
    with pytest.raises(TypeError):  # shared maps are read-only: no stale-by-mutation case
        r.src_k8s["pod.name"] = "x"  # type: ignore[index]


def test_mixed_batches_and_bounded_identity_cache() -> None:
    shared = flow_reports(60, seed=6)
    copies = flow_reports(60, seed=7, shared=False)
    empty = [dataclasses.replace(r, src_k8s={}, dst_k8s=AttrMap()) for r in shared[:10]]
    batch = [x for trio in zip(shared, copies, empty * 6, strict=False) for x in trio]
    enc = SpanEncoder(RESOURCE, cache_limit=4)
    for _ in range(3):  # cold, warm, and after the small caches were cleared many times
        assert enc.encode(batch) == official_request(batch, RESOURCE)
    col = enc._columns.src_k8s
    assert len(col.by_id) <= 4 and len(col.refs) <= 4 and len(col) <= 4


def test_per_report_copies_same_bytes() -> None:
    reports = flow_reports(300, seed=8, shared=False)
    assert SpanEncoder(RESOURCE).encode(reports) == official_request(reports, RESOURCE)


def test_optional_and_huge_ints_through_the_numpy_path() -> None:
    base = tcp_report(3)
    reports = [
        dataclasses.replace(base, handshake_latency_ns=None, retransmits=None),
        dataclasses.replace(base, bytes_total=2**56, packets_total=2**63 - 1, rev_bytes_total=0),
        dataclasses.replace(base, bytes_delta=-1, handshake_latency_ns=2**62),  # slow path
        base,
    ]
    enc = SpanEncoder(RESOURCE)
    assert enc.encode(reports) == official_request(reports, RESOURCE)
    for r in reports:
        assert enc.encode([r]) == official_request([r], RESOURCE)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 6, 9])
def test_gzip_levels_make_standard_gzip(level: int) -> None:
    body = SpanEncoder(RESOURCE).encode(flow_reports(300, seed=2))
    out = gzip_compressor(level)(body)
    assert out[:3] == b"\x1f\x8b\x08"  # gzip magic + deflate (RFC 1952)
    assert gzip.decompress(out) == body
    assert zlib.decompress(out, 31) == body  # what zlib-based receivers do
    assert len(out) < len(body) / 5


def test_http_transport_uses_the_configured_level() -> None:
    body = SpanEncoder(RESOURCE).encode(flow_reports(300, seed=2))
    sizes = {}
    for level in (1, 9):
        cfg = OtlpConfig(endpoint="http://127.0.0.1:9", protocol="http_binary",
                         compression_level=level)  # fmt: skip
        t = HttpTransport(cfg)
        try:
            sizes[level] = len(out := t.prepare(body))
            assert gzip.decompress(out) == body
        finally:
            t.close()
    assert sizes[9] < sizes[1]  # zlib level 9 really is used above the ISA-L levels
    assert OtlpConfig().compression_level == 1
    for bad in (0, 10):
        with pytest.raises(ValidationError):
            OtlpConfig(compression_level=bad)
