"""Printing reports for `mermin replay --format text|json`: the stdout exporter's formatting
(`mermin.export.stdout`), so replay and the agent print identically."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from mermin.export.stdout import format_json, format_text
from mermin.flows.record import FlowReport

__all__ = ["printer"]


def printer(fmt: str, stream: TextIO) -> Callable[[list[FlowReport]], None]:
    """A sink that writes each batch of reports to `stream` in one write."""
    if fmt == "json":

        def sink(reports: list[FlowReport]) -> None:
            stream.write("".join(format_json(r) + "\n" for r in reports))

    else:

        def sink(reports: list[FlowReport]) -> None:
            stream.write("".join(format_text(r) for r in reports))

    return sink
