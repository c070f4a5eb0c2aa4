"""Fixtures of the kernel golden tests: one loaded program per test module, a fresh Harness
per test. A module may set `DATAPATH_SETTINGS` to load with other sizes or ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.datapath.packets import Harness

from mermin.datapath.loader import Datapath, DatapathSettings

DEFAULT_SETTINGS = DatapathSettings(pin=False, replay=True, flows_capacity=4096)


@pytest.fixture(scope="module")
def dp(request: pytest.FixtureRequest, require_root: None, bpf_object: Path,
       ) -> Iterator[Datapath]:
    settings = getattr(request.module, "DATAPATH_SETTINGS", DEFAULT_SETTINGS)
    with Datapath.load(bpf_object, settings) as d:
        yield d


@pytest.fixture
def h(dp: Datapath) -> Harness:
    harness = Harness(dp)
    harness.reset()
    return harness
