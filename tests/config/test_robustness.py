"""Whatever a user writes, loading ends in a Config or a ConfigError whose every line names the
file: never another exception (which would print a traceback)."""

from __future__ import annotations

import copy
import random
from typing import Any

from mermin.config.hcl_writer import dump_hcl
from mermin.config.loader import parse_config, validate_config
from mermin.config.schema import Config
from mermin.errors import ConfigError

JUNK: list[Any] = [None, [], {}, "x", -1, 1.5, True, {"a": 1}, [1, "a"], "10.0.0.0/8", 70000,
                   "1s", ["*"], {"match": 1}]  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...], out: list[tuple[Any, ...]]) -> None:
    out.append(path)
    if isinstance(value, dict):
        for key, item in value.items():
            _paths(item, (*path, key), out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _paths(item, (*path, index), out)


def test_wrong_shapes_anywhere_give_config_errors() -> None:
    base = Config().model_dump(mode="json", by_alias=True)
    paths: list[tuple[Any, ...]] = []
    _paths(base, (), paths)
    rng = random.Random(1)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(600):
        data = copy.deepcopy(base)
        path = rng.choice(paths[1:])
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = rng.choice(JUNK)
        if isinstance(parent, dict) and rng.random() < 0.3:
            parent["bogus_key"] = 1
        try:
            validate_config(data, name="f.hcl", lines={}, origins={})
            outcomes["ok"] += 1
        except ConfigError as exc:
            outcomes["error"] += 1
            assert all(line.startswith("f.hcl: ") for line in str(exc).splitlines()), str(exc)
    assert outcomes["error"] > 300 and outcomes["ok"] > 0


def test_mangled_hcl_gives_config_errors() -> None:
    text = dump_hcl(Config(), comments=False)
    rng = random.Random(2)
    chars = list('{}[]="\\$,#\n ae1-.:/*')
    errors = 0
    for _ in range(80):
        mangled = list(text)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(mangled))
            op = rng.random()
            if op < 0.4:
                del mangled[i]
            elif op < 0.8:
                mangled.insert(i, rng.choice(chars))
            else:
                mangled[i] = rng.choice(chars)
        try:
            parse_config("".join(mangled), fmt="hcl", name="f.hcl", environ={})
        except ConfigError as exc:
            errors += 1
            assert all(line.startswith("f.hcl:") for line in str(exc).splitlines()), str(exc)
    assert errors > 15
