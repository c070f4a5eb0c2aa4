#!/usr/bin/env python3
"""Generate the key reference of docs/configuration.md from the pydantic models.

    uv run python scripts/gen_config_docs.py          # rewrite the generated part in place
    uv run python scripts/gen_config_docs.py --check  # exit 1 if the page is out of date

Everything between the BEGIN/END markers of docs/configuration.md is generated: one table per
block (key, type, default, description, whether the original Mermin had the key). Blocks owned
by other parts are included through `mermin.config.schema.Config`, so a new key anywhere shows
up here when the script runs; tests/config/test_docs.py fails when a key is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mermin.config.base import format_duration, parse_duration  # noqa: E402
from mermin.config.schema import Config  # noqa: E402

PAGE = REPO / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE (scripts/gen_config_docs.py) -->"
END = "<!-- END GENERATED REFERENCE -->"

LABELLED = {"discovery", "attributes", "filter", "export", "internal"}

# Key paths of the original Mermin (inventory §5-§6), in this script's path notation.
ORIGINAL_PREFIXES = (
    "log_level", "log_color", "auto_reload", "shutdown_timeout",
    "pipeline.flow_capture.flow_stats_capacity", "pipeline.flow_capture.flow_events_capacity",
    "pipeline.flow_producer.workers", "pipeline.flow_producer.worker_queue_capacity",
    "pipeline.flow_producer.flow_store_poll_interval",
    "pipeline.flow_producer.flow_span_queue_capacity",
    "pipeline.k8s_decorator.decorated_span_queue_capacity", "pipeline.k8s_decorator.threads",
    "parser.", "discovery.instrument.interfaces", "discovery.instrument.auto_discover_interfaces",
    "discovery.instrument.tc_priority", "discovery.instrument.tcx_order",
    "discovery.informer.k8s.kubeconfig_path", "discovery.informer.k8s.informers_sync_timeout",
    "discovery.informer.k8s.selectors", "discovery.informer.k8s.owner_relations",
    "discovery.informer.k8s.selector_relations",
    "attributes.source.k8s.extract", "attributes.source.k8s.association",
    "attributes.destination.k8s.extract", "attributes.destination.k8s.association",
    "filter.",
    "span.max_record_interval", "span.generic_timeout", "span.icmp_timeout", "span.tcp_timeout",
    "span.tcp_fin_timeout", "span.tcp_rst_timeout", "span.udp_timeout",
    "span.community_id_seed", "span.trace_id_timeout", "span.enable_hostname_resolution",
    "span.hostname_resolve_timeout",
    "export.traces.stdout", "export.traces.otlp.endpoint", "export.traces.otlp.protocol",
    "export.traces.otlp.timeout", "export.traces.otlp.max_batch_size",
    "export.traces.otlp.max_batch_interval", "export.traces.otlp.max_queue_size",
    "export.traces.otlp.max_concurrent_exports", "export.traces.otlp.max_export_timeout",
    "export.traces.otlp.auth", "export.traces.otlp.headers", "export.traces.otlp.tls",
    "internal.traces", "internal.metrics.enabled", "internal.metrics.listen_address",
    "internal.metrics.port", "internal.metrics.debug_metrics_enabled",
    "internal.metrics.stale_metric_ttl", "internal.metrics.histogram_buckets",
    "internal.server",
)  # fmt: skip


def in_original(path: str) -> bool:
    plain = path.replace("[]", "").replace(".<name>", "")
    return any(plain == p or plain.startswith(p.rstrip(".") + ".") or
               (p.endswith(".") and plain.startswith(p)) for p in ORIGINAL_PREFIXES)  # fmt: skip


# -- annotations ------------------------------------------------------------------------------


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """(bare type, Annotated metadata)."""
    meta: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        args = typing.get_args(annotation)
        annotation, meta = args[0], meta + list(args[1:])
    return annotation, meta


def _union_args(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for arg in _union_args(_strip(annotation)[0]):
        arg = _strip(arg)[0]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _container_model(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("[]", Model) for list[Model], (".<name>", Model) for dict[str, Model]."""
    for arg in _union_args(_strip(annotation)[0]):
        arg = _strip(arg)[0]
        origin, params = typing.get_origin(arg), typing.get_args(arg)
        if origin is list and params and _model_of(params[0]):
            return "[]", _model_of(params[0])  # type: ignore[return-value]
        if origin is dict and len(params) == 2 and _model_of(params[1]):
            return ".<name>", _model_of(params[1])  # type: ignore[return-value]
    return None


def _is_duration(meta: list[Any]) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in meta)


def type_name(annotation: Any, field: FieldInfo | None = None) -> str:
    bare, meta = _strip(annotation)
    meta = meta + (list(field.metadata) if field else [])
    if _is_duration(meta):
        text = "duration" + (" or null" if type(None) in _union_args(bare) else "")
    else:
        parts = []
        for arg in _union_args(bare):
            arg_bare, arg_meta = _strip(arg)
            if _is_duration(arg_meta):
                parts.append("duration")
            else:
                parts.append(_simple(arg_bare))
        text = " or ".join(dict.fromkeys(parts))
        meta += [m for arg in _union_args(bare) for m in _strip(arg)[1]]
    bounds = _bounds(meta)
    return f"{text} ({bounds})" if bounds else text


def _simple(arg: Any) -> str:
    if arg is type(None):
        return "null"
    if arg is SecretStr:
        return "string (secret)"
    origin, params = typing.get_origin(arg), typing.get_args(arg)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{p}`" for p in params)
    if origin is list:
        return f"list of {type_name(params[0])}" if params else "list"
    if origin is dict:
        return f"map of {type_name(params[1])}" if len(params) == 2 else "map"
    if arg is typing.Any:
        return "any"
    if isinstance(arg, type) and issubclass(arg, BaseModel):
        return "block"
    return {"int": "integer", "str": "string", "bool": "boolean", "float": "number"}.get(
        getattr(arg, "__name__", str(arg)), getattr(arg, "__name__", str(arg))
    )


def _bounds(meta: list[Any]) -> str:
    low = high = None
    for m in meta:
        for attr, side in (("ge", "low"), ("gt", "low>"), ("le", "high"), ("lt", "high<")):
            value = getattr(m, attr, None)
            if value is None:
                continue
            if side.startswith("low"):
                low = f"> {value}" if side == "low>" else f">= {value}"
            else:
                high = f"< {value}" if side == "high<" else f"<= {value}"
    if low and high and low.startswith(">=") and high.startswith("<="):
        return f"{low[3:]}-{high[3:]}"
    return ", ".join(x for x in (low, high) if x)


def default_text(field: FieldInfo, value: Any) -> str:
    if field.is_required():
        return "required"
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and _is_duration(list(field.metadata) + _strip(field.annotation)[1])
    ):
        value = format_duration(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    elif isinstance(value, SecretStr):
        value = "**********"
    else:
        value = to_jsonable_python(value)
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else f'"{value}"'
    if len(text) > 60:
        text = text[:57] + "..."
    return f"`{text}`".replace("|", "\\|")


# -- walking ----------------------------------------------------------------------------------


def heading(path: list[str]) -> str:
    if not path:
        return "Top-level keys"
    if path[0] in LABELLED and len(path) >= 2:
        labels = [path[1]]
        if len(path) >= 3 and path[2] == "k8s":
            labels.append("k8s")
        rest = path[1 + len(labels) :]
        head = f"{path[0]} " + " ".join(f'"{label}"' for label in labels)
        return f"`{head}`" + (f" → `{'.'.join(rest)}`" if rest else "")
    return f"`{'.'.join(path)}`"


def document(model: type[BaseModel], instance: Any, path: list[str], out: list[str],
             seen: dict[type, str]) -> None:  # fmt: skip
    dotted = ".".join(path)
    title = heading(path)
    if model in seen and path:
        out += [f"### {title}", "", f"Same keys as {seen[model]}.", ""]
        return
    seen[model] = title
    rows, children = [], []
    dumped = instance.model_dump(mode="json", by_alias=True) if instance is not None else {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        value = getattr(instance, name, None) if instance is not None else None
        if value is None and not field.is_required():
            value = field.get_default(call_default_factory=True)
        shown = dumped.get(key, value)
        sub = _model_of(field.annotation)
        full = f"{dotted}.{key}" if dotted else key
        if sub is not None and getattr(sub, "hcl_inline", False):
            kind = getattr(sub, "kind", "values")
            rows.append((key, f"`{{ match, not_match }}` of {kind}", "`[]` / `[]`",
                         field.description or "", in_original(full)))  # fmt: skip
            continue
        if sub is not None:
            children.append((sub, value, [*path, key]))
            continue
        container = _container_model(field.annotation)
        rows.append((key, type_name(field.annotation, field), default_text(field, shown),
                     field.description or "", in_original(full)))  # fmt: skip
        if container:
            suffix, element = container
            children.append((element, None, [*path, key + suffix]))
    if rows:
        desc = " ".join((model.__doc__ or "").split("\n\n")[0].split())
        out += [f"### {title}", ""]
        if desc:
            out += [desc, ""]
        out += ["| Key | Type | Default | Description | Original |", "|---|---|---|---|---|"]
        for key, typ, default, description, original in rows:
            description = " ".join(description.split()).replace("|", "\\|")
            out.append(f"| `{key}` | {typ} | {default} | {description} | "
                       f"{'yes' if original else '**new**'} |")  # fmt: skip
        out.append("")
    for sub, value, sub_path in children:
        document(sub, value, sub_path, out, seen)


def generate() -> str:
    out: list[str] = [BEGIN, ""]
    document(Config, Config(), [], out, {})
    out.append(END)
    return "\n".join(out)


def render(page: str) -> str:
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < 0:
        raise SystemExit(f"{PAGE}: markers {BEGIN!r} / {END!r} not found")
    return page[:start] + generate() + page[end + len(END) :]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args()
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            print(f"{PAGE} is out of date: run scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
