"""YAML reading: values, line marks, merge keys, syntax errors."""

from __future__ import annotations

import pytest

from mermin.config.yaml_reader import read_yaml
from mermin.errors import ConfigError

TEXT = """\
log_level: debug
base: &base
  port: 1
discovery:
  instrument:
    interfaces:
      - veth*
      - /^eth0$/
merged:
  <<: *base
  other: 2
"""


def test_values_and_lines() -> None:
    data, lines = read_yaml(TEXT, "t.yaml")
    assert data["discovery"]["instrument"]["interfaces"] == ["veth*", "/^eth0$/"]
    assert data["merged"] == {"port": 1, "other": 2}
    assert lines[("log_level",)] == 1
    assert lines[("discovery", "instrument", "interfaces")] == 6
    assert lines[("discovery", "instrument", "interfaces", 1)] == 8
    assert lines[("merged", "other")] == 11


def test_empty_file_is_an_empty_config() -> None:
    assert read_yaml("# nothing\n", "t.yaml") == ({}, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1\n", r"^t.yaml:2:1: syntax error: expected ',' or ']'"),
        ("a: 1\na: 2\n", r"^t.yaml:2:1: syntax error: duplicate key 'a'"),
        ("- 1\n- 2\n", r"^t.yaml:1: the top level must be a mapping"),
        ("a: !!python/object:os.system x\n", r"^t.yaml:1:4: syntax error: could not determine"),
        ("a:\n  b: 1\n c: 2\n", r"^t.yaml:3:\d+: syntax error"),
    ],
)
def test_syntax_errors(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        read_yaml(text, "t.yaml")
    assert "\n" not in str(info.value)
