"""Root test configuration: markers and shared fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # makes `tests.helpers` importable


@pytest.fixture(scope="session")
def require_root() -> None:
    """Kernel tests need root. CI runs as root: never skip there."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("kernel tests must run as root in CI")
        pytest.skip("needs root (loads eBPF programs, creates network namespaces)")


@pytest.fixture(scope="session")
def bpf_object() -> Path:
    """Path of the built BPF object (scripts/setup.sh runs `make bpf`)."""
    path = REPO / "build" / "mermin.bpf.o"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make bpf` (scripts/setup.sh does)")
    return path
