"""From kernel flow entries to flow reports.

    record        FlowReport (the type every later stage passes along), SpanKind, EndReason
    names         DSCP / ECN / ICMP / TCP names
    table         FlowTable: poll the map, lifecycle, deltas, final reports (atomic take)
    assemble      ReportBuilder: batch -> FlowReport objects, per-flow identity
    decode        vectorised views over KEY_DTYPE / VALUE_DTYPE batches, timeouts
    direction     DirectionResolver: initiator side, span kind
    listening     NodeSocketWatcher: listening sockets and local addresses of every netns
    community_id  Community ID v1 (scalar and vectorised)
    clock         BootClock (live, CLOCK_BOOTTIME -> wall), ManualClock (tests, replay)

Names are imported lazily, so importing `mermin.flows.record` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "BootClock",
    "CommunityIdHasher",
    "DirectionResolver",
    "EndReason",
    "FlowReport",
    "FlowTable",
    "FlowTableStats",
    "ManualClock",
    "NodeSocketWatcher",
    "NodeSockets",
    "SpanKind",
]

_WHERE = {
    "BootClock": "clock",
    "CommunityIdHasher": "community_id",
    "DirectionResolver": "direction",
    "EndReason": "record",
    "FlowReport": "record",
    "FlowTable": "table",
    "FlowTableStats": "table",
    "ManualClock": "clock",
    "NodeSocketWatcher": "listening",
    "NodeSockets": "listening",
    "SpanKind": "record",
}

if TYPE_CHECKING:
    from mermin.flows.clock import BootClock, ManualClock
    from mermin.flows.community_id import CommunityIdHasher
    from mermin.flows.direction import DirectionResolver
    from mermin.flows.listening import NodeSockets, NodeSocketWatcher
    from mermin.flows.record import EndReason, FlowReport, SpanKind
    from mermin.flows.table import FlowTable, FlowTableStats


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mermin.flows' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mermin.flows.{module}"), name)
