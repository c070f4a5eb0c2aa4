"""Typed configuration: schema (pydantic) and loaders (HCL, YAML).

    from mermin.config import Config, load_config
    config = load_config("config.hcl", cli_overrides={"log_level": "debug"})

Names are imported lazily so that importing one block module (`mermin.config.base`, ...) does
not import every other block through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Config", "dump_hcl", "load_config", "parse_config"]

_LAZY = {
    "Config": "mermin.config.schema",
    "dump_hcl": "mermin.config.hcl_writer",
    "load_config": "mermin.config.loader",
    "parse_config": "mermin.config.loader",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mermin.config' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
