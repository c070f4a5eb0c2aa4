"""docs/grafana-dashboard.json: valid, laid out, and querying only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mermin.telemetry import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
_HIST_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def _labels() -> dict[str, set[str]]:
    """{exposed metric name: label names} for every metric of the registry."""
    out: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if hasattr(obj, "_labelnames") and hasattr(obj, "_name"):
            out[obj._name + ("_total" if obj._type == "counter" else "")] = set(obj._labelnames)
    metrics.KERNEL_COUNTERS.set_source(lambda: {})
    try:
        for family in metrics.KERNEL_COUNTERS.collect():
            out[family.name + "_total"] = {k for s in family.samples for k in s.labels}
    finally:
        metrics.KERNEL_COUNTERS.set_source(None)
    return out


def _panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def test_dashboard_is_valid_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    boxes = []
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["title"]
        for other in boxes:  # no two panels overlap
            assert (g["x"] + g["w"] <= other["x"] or other["x"] + other["w"] <= g["x"]
                    or g["y"] + g["h"] <= other["y"] or other["y"] + other["h"] <= g["y"]), \
                panel["title"]
        boxes.append(g)
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_every_query_uses_existing_metrics_and_labels():
    labels = _labels()
    used = set()
    for panel in _panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            names = set(re.findall(r"\bmermin_[a-z0-9_]+", expr))
            assert names, expr
            known: set[str] = {"le", "instance", "job"}
            for name in names:
                base = name if name in labels else _HIST_SUFFIX.sub("", name)
                assert base in labels, f"{panel['title']}: {name} is not a metric"
                used.add(base)
                known |= labels[base]
            for group in re.findall(r"\bby \(([^)]*)\)", expr):
                for label in (x.strip() for x in group.split(",")):
                    assert label in known, f"{panel['title']}: label {label} not on {names}"
            for label in re.findall(r"([a-z_]+)=~?\"", expr):
                assert label in known, f"{panel['title']}: selector label {label}"
    # the drops an operator must see are all on the dashboard
    for must in ("mermin_ebpf_map_full_total", "mermin_ebpf_unparsed_packets_total",
                 "mermin_export_dropped_total", "mermin_ebpf_map_fill_ratio",
                 "mermin_filter_rejected_total", "mermin_flow_spans_active_total"):
        assert must in used
