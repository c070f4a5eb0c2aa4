"""Read a YAML config file into plain Python values plus the line of every key.

PyYAML composes the document into nodes (each with a start mark); we construct the values
ourselves from those nodes so every mapping key and sequence item keeps its line. Safe loading
only (no Python tags); anchors, aliases and `<<` merge keys work.
"""

from __future__ import annotations

from typing import Any

import yaml

from mermin.config.hcl_reader import Lines, Path
from mermin.errors import ConfigError

__all__ = ["read_yaml"]


def read_yaml(text: str, name: str) -> tuple[dict, Lines]:
    """Parse YAML `text` (from file `name`) into nested dicts and a key-path -> line map."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: Lines = {}
        data = {} if node is None else _construct(loader, node, (), lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1"
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{name}:{where}: syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: syntax error: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{name}:1: the top level must be a mapping of keys (log_level: ...)")
    return data, lines


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: Path, lines: Lines) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain scalars", key_node.start_mark
                )
            key = str(key) if not isinstance(key, str) else key
            here = (*path, key)
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            lines[here] = key_node.start_mark.line + 1
            out[key] = _construct(loader, value_node, here, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            items.append(_construct(loader, item, (*path, index), lines))
        return items
    return loader.construct_object(node, deep=True)
