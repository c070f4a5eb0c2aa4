"""docs/configuration.md documents every key of every block (scripts/gen_config_docs.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_config_docs", REPO / "scripts" /
                                                  "gen_config_docs.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys_by_section(text: str) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    section = ""
    for line in text.splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
        match = re.match(r"^\| `([^`]+)` \|", line)
        if match and section:
            out.add((section, match.group(1)))
    return out


def test_every_config_key_is_in_the_reference() -> None:
    generated = _keys_by_section(_generator().generate())
    page = _keys_by_section((REPO / "docs" / "configuration.md").read_text())
    missing = sorted(generated - page)
    assert not missing, f"run `uv run python scripts/gen_config_docs.py`; missing: {missing}"
    assert ("Top-level keys", "log_level") in generated
    assert ('`filter "flow"`', "icmp_code_name") in generated
    assert len(generated) > 100
