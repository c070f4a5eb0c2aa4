"""Turn pydantic validation errors into one readable line per problem.

Each line names where (file and line, or the environment variable / command-line flag that set
the value), the key path (`export.traces.otlp.max_batch_size`), what was expected and what was
found; an unknown key gets a "did you mean" suggestion from the fields of the model it is in.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from mermin.config.hcl_reader import Lines, Path

__all__ = ["dotted", "format_problems", "model_at"]

_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def dotted(path: Path) -> str:
    """`("export", "traces", "otlp", "headers", 0)` -> `export.traces.otlp.headers[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def format_problems(
    exc: ValidationError,
    root: type[BaseModel],
    data: Any,
    *,
    name: str,
    lines: Lines,
    origins: Mapping[Path, str],
) -> list[str]:
    """One line per error of `exc` (raised validating `data` against `root`)."""
    found: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False):
        path = _input_path(err["loc"], data, err["type"])
        if len(path) < 2:  # a block-level check: point at the first key its message names
            path = _named_key(str(err.get("msg", "")), lines) or path
        where, line = _where(path, name, lines, origins)
        found.append((line, f"{where}: {dotted(path)}: {_message(err, path, root)}"))
    found.sort(key=lambda item: item[0])  # file order; stable for equal lines
    return list(dict.fromkeys(text for _, text in found))  # a union can report a mistake twice


def _named_key(message: str, lines: Lines) -> Path | None:
    for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+", message):
        path = tuple(token.split("."))
        if path in lines:
            return path
    return None


def _input_path(loc: tuple[Any, ...], data: Any, kind: str) -> Path:
    """Keep the parts of pydantic's `loc` that address the input (drop union/type tags)."""
    path: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and part < len(current)
        if in_dict or in_list:
            current = current[part]
            path.append(part)
        elif last and kind in ("missing", "extra_forbidden") and isinstance(part, str | int):
            path.append(part)
    return tuple(path)


def _where(path: Path, name: str, lines: Lines, origins: Mapping[Path, str]) -> tuple[str, int]:
    """Where a value came from: ("file:line", line) or ("environment X=...", 0)."""
    for cut in range(len(path), -1, -1):
        prefix = path[:cut]
        if prefix in origins:
            return origins[prefix], 0
        if prefix in lines:
            return f"{name}:{lines[prefix]}", lines[prefix]
    return name, 0


# keys whose values are secrets: an error names the key, never echoes the value
_SECRET_KEYS = frozenset({"pass", "password", "bearer", "token", "headers", "client_key"})


def _message(err: Mapping[str, Any], path: Path, root: type[BaseModel]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if any(part in _SECRET_KEYS for part in path if isinstance(part, str)):
        value = _Hidden()
    if kind == "extra_forbidden":
        return _unknown_key(path, root)
    if kind == "missing":
        return "required key is missing"
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"expected a value {words} {ctx.get(key)}, got {_show(value)}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    if kind == "assertion_error":
        return str(err["msg"]).removeprefix("Assertion failed, ")
    msg = str(err["msg"])
    if msg.startswith("Input should be "):
        msg = "expected " + msg.removeprefix("Input should be ").split(", unable")[0]
        if kind in ("dict_type", "model_type", "model_attributes_type") and isinstance(value, list):
            return f"{msg}, got a list (a block written twice? write it once)"
        return f"{msg}, got {_show(value)}"
    return msg[0].lower() + msg[1:] if msg else kind


class _Hidden:
    """Stands in for a secret's value in messages."""

    def __repr__(self) -> str:
        return "a value (not shown: secret)"


def _show(value: Any) -> str:
    text = repr(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, dict):
        text = "an object"
    elif isinstance(value, list):
        text = "a list"
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(path: Path, root: type[BaseModel]) -> str:
    key = path[-1] if path else ""
    model = model_at(root, path[:-1])
    if model is None:
        return "unknown key"
    names = field_names(model)
    hint = _misplaced_filter_key(path, root)
    if hint:
        return f"unknown key {key!r}; {hint}"
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.75)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; valid keys here: {', '.join(sorted(names))}"


def _misplaced_filter_key(path: Path, root: type[BaseModel]) -> str | None:
    """`filter "source" { transport = ... }` -> say which filter block has `transport`."""
    if len(path) != 3 or path[0] != "filter":
        return None
    filters = model_at(root, ("filter",))
    if filters is None:
        return None
    for block in field_names(filters):
        if block == path[1]:
            continue
        model = model_at(root, ("filter", block))
        if model is not None and path[2] in field_names(model):
            return f'{path[2]!r} is an attribute of filter "{block}"'
    return None


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys a config file uses for `model` (aliases where set)."""
    return [f.alias or n for n, f in model.model_fields.items()]


def model_at(root: type[BaseModel], path: Path) -> type[BaseModel] | None:
    """The model class that validates the value at `path`, or None if not a model."""
    current: Any = root
    for part in path:
        model = _as_model(current)
        if model is not None and isinstance(part, str):
            field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            current = field.annotation
            continue
        current = _element_type(current, part)
        if current is None:
            return None
    return _as_model(current)


def _args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _args(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: tuple[Any, ...] = ()
        for arg in typing.get_args(annotation):
            out += _args(arg) if typing.get_origin(arg) else (arg,)
        return out
    return (annotation,)


def _as_model(annotation: Any) -> type[BaseModel] | None:
    for arg in _args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _element_type(annotation: Any, part: str | int) -> Any:
    for arg in _args(annotation):
        origin = typing.get_origin(arg)
        params = typing.get_args(arg)
        if origin in (list, tuple, set, frozenset) and isinstance(part, int) and params:
            return params[0]
        if origin is dict and len(params) == 2:
            return params[1]
    return None
