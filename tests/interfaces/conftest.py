"""Fixtures for the interface tests: unique veths and namespaces, always removed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from tests.interfaces.support import Links, unique


@pytest.fixture
def links(require_root: None) -> Iterator[Links]:
    made = Links()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def netns(require_root: None) -> Iterator[str]:
    """A fresh named network namespace; its path is /var/run/netns/NAME."""
    name = unique("ns")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
