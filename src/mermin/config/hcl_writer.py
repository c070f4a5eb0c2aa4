"""Write a `Config` as HCL (what `mermin config defaults` prints).

Nested models become blocks; the top-level groups the original writes with labels become
labelled blocks (`discovery "instrument" {}`, `attributes "source" "k8s" {}`, `filter "flow" {}`,
`export "traces" {}`, `internal "metrics" {}`); dicts and models inside lists become object
literals. Each key is preceded by its description as a comment. A null value is written as a
comment when null is the key's default and as `key = null` otherwise, so any Config written
here loads back to an equal Config (tests check it).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

__all__ = ["dump_hcl", "hcl_literal"]

LABELLED = ("discovery", "attributes", "filter", "export", "internal")
"""Top-level keys whose sub-blocks are written with labels, as in the original."""

SECOND_LABELS = ("k8s",)
"""A sub-block holding only one of these keys gets it as a second label (`"informer" "k8s"`)."""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_INDENT = "  "
_WIDTH = 96


def dump_hcl(
    config: BaseModel,
    *,
    comments: bool = True,
    header: str | None = None,
    reveal_secrets: bool = False,
) -> str:
    """The whole `config` as HCL text. Secrets print as `**********` unless `reveal_secrets`."""
    dumped = _jsonable(config.model_dump(mode="python", by_alias=True), reveal_secrets)
    out: list[str] = []
    if header:
        out += [f"# {line}".rstrip() for line in header.splitlines()] + [""]
    for key, field, value in _fields(config):
        raw = dumped.get(key)
        if comments and field.description:
            out += _comment(field.description, "")
        if key in LABELLED and isinstance(value, BaseModel) and _all_models(value):
            out += _labelled(key, value, raw, comments)
        elif isinstance(value, BaseModel):
            out += _block([key], value, raw, comments, "")
        elif raw is None and _defaults_to_none(field):
            out.append(f"# {key}: not set")
        else:
            out.append(f"{key} = {hcl_literal(raw, '')}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _jsonable(value: Any, reveal: bool) -> Any:
    """model_dump(mode="python") output -> JSON-like values, with secrets handled."""
    if isinstance(value, SecretStr | SecretBytes):
        secret = value.get_secret_value()
        if not reveal:
            return "**********"
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, dict):
        return {str(k): _jsonable(v, reveal) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, reveal) for v in value]
    return to_jsonable_python(value)


def _fields(model: BaseModel) -> list[tuple[str, Any, Any]]:
    return [
        (field.alias or name, field, getattr(model, name))
        for name, field in type(model).model_fields.items()
    ]


def _defaults_to_none(field: Any) -> bool:
    return field.default_factory is None and field.default is None


def _all_models(model: BaseModel) -> bool:
    return all(isinstance(v, BaseModel | None) for _, _, v in _fields(model))


def _labelled(key: str, group: BaseModel, raw: dict[str, Any], comments: bool) -> list[str]:
    if all(v is None for _, _, v in _fields(group)):
        return [f"{key} {{}}"]  # e.g. `attributes {}`: every labelled block off
    out: list[str] = []
    for label, field, value in _fields(group):
        if value is None:
            out.append(f'# {key} "{label}": not set')
            continue
        labels, body, body_raw = [key, label], value, raw[label]
        inner = _fields(value)
        second = len(inner) == 1 and inner[0][0] in SECOND_LABELS
        if second and isinstance(inner[0][2], BaseModel):
            labels.append(inner[0][0])
            body, body_raw = inner[0][2], body_raw[inner[0][0]]
        if comments and field.description:
            out += _comment(field.description, "")
        out += _block(labels, body, body_raw, comments, "")
        out.append("")
    return out[:-1] if out and out[-1] == "" else out


def _block(
    labels: list[str], model: BaseModel, raw: dict[str, Any], comments: bool, indent: str
) -> list[str]:
    head = labels[0] + "".join(f' "{label}"' for label in labels[1:])
    out = [f"{indent}{head} {{"]
    inner = indent + _INDENT
    for key, field, value in _fields(model):
        if comments and field.description:
            out += _comment(field.description, inner)
        if isinstance(value, BaseModel) and getattr(type(value), "hcl_inline", False):
            out.append(f"{inner}{_key(key)} = {_inline(raw[key])}")
        elif isinstance(value, BaseModel):
            out += _block([key], value, raw[key], comments, inner)
        elif raw.get(key) is None and _defaults_to_none(field):
            out.append(f"{inner}# {key}: not set")
        else:
            out.append(f"{inner}{_key(key)} = {hcl_literal(raw[key], inner)}")
    out.append(f"{indent}}}")
    return out


def _inline(value: dict[str, Any]) -> str:
    """`{ a = 1, b = [] }` on one line (for small leaf models such as filter pairs)."""
    items = [f"{_key(k)} = {hcl_literal(v)}" for k, v in value.items() if v is not None]
    return "{ " + ", ".join(items) + " }" if items else "{}"


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        " ".join(text.split()),
        width=_WIDTH,
        initial_indent=f"{indent}# ",
        subsequent_indent=f"{indent}# ",
        break_on_hyphens=False,
    )


def _key(key: str) -> str:
    return key if _IDENT.match(key) and key not in ("true", "false", "null") else _string(key)


def _string(text: str) -> str:
    body = json.dumps(text, ensure_ascii=False)[1:-1]  # \" \\ \n \t \uXXXX escapes
    return '"' + body.replace("${", "$${").replace("%{", "%%{") + '"'


def hcl_literal(value: Any, indent: str = "") -> str:
    """An HCL expression for a JSON-like value (objects span lines, short lists do not)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"HCL cannot represent {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    inner = indent + _INDENT
    if isinstance(value, list | tuple):
        items = [hcl_literal(v, inner) for v in value]
        flat = "[" + ", ".join(items) + "]"
        if "\n" not in flat and len(flat) + len(indent) <= _WIDTH - 10:
            return flat
        return "[\n" + "".join(f"{inner}{item},\n" for item in items) + f"{indent}]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = [f"{inner}{_key(str(k))} = {hcl_literal(v, inner)}" for k, v in value.items()]
        return "{\n" + "\n".join(lines) + f"\n{indent}}}"
    raise TypeError(f"cannot write {type(value).__name__} as HCL")
