"""Replaying a capture through the real datapath on capture time.

Packets are fed to the loaded kernel program (`mermin_ingress`) with BPF_PROG_TEST_RUN, each
with its capture timestamp in `__sk_buff.tstamp` (the program reads that clock when loaded with
`replay=True`). Capture time also drives the flow table: the packets up to each
`span.poll_interval` boundary run, then the table is polled at that boundary, exactly as the
live agent polls on its own clock. A quiet stretch of the capture costs one poll, not one per
interval: the reports would be identical, since nothing changes during it. At the end of the
capture the table is polled once more at the last timestamp and the remaining flows are
flushed: `forced_end`, or `end_of_flow` for TCP connections the capture saw close.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mermin.config.span import SpanConfig
from mermin.flows.clock import ManualClock
from mermin.flows.direction import DirectionResolver
from mermin.flows.record import EndReason, FlowReport
from mermin.flows.table import FlowTable, FlowTableStats
from mermin.replay import fastrun
from mermin.replay.capture import Capture

__all__ = ["ReplayResult", "ReplaySettings", "replay_capture"]

Sink = Callable[[list[FlowReport]], None]
# BPF_PROG_TEST_RUN needs an interface of our netns for skb->dev; 1 is loopback, always there.
_REPLAY_IFINDEX = 1
_MIN_REPLAY_CAPACITY = 131072


@dataclass(frozen=True)
class ReplaySettings:
    """What a replay takes from the config (all defaulted)."""

    span: SpanConfig = field(default_factory=SpanConfig)
    flows_capacity: int = _MIN_REPLAY_CAPACITY
    vxlan_port: int = 4789
    geneve_port: int = 6081
    wireguard_port: int = 51820
    object_path: str | None = None
    use_c: bool | None = None  # None: the C runner when built


@dataclass
class ReplayResult:
    """Counts of one replay (printed to stderr by the command)."""

    packets: int = 0
    run: fastrun.RunCounts = field(default_factory=fastrun.RunCounts)
    kernel: dict[str, int] = field(default_factory=dict)
    table: FlowTableStats = field(default_factory=FlowTableStats)
    reports: int = 0
    polls: int = 0
    seconds: float = 0.0
    runner: str = "c"


def replay_capture(capture: Capture, settings: ReplaySettings, sink: Sink) -> ReplayResult:
    """Run every packet of `capture` through the datapath; hand reports to `sink` in order."""
    from mermin.datapath.loader import Datapath, DatapathSettings

    began = time.perf_counter()
    dp_settings = DatapathSettings(
        flows_capacity=max(settings.flows_capacity, _MIN_REPLAY_CAPACITY),
        vxlan_port=settings.vxlan_port,
        geneve_port=settings.geneve_port,
        wireguard_port=settings.wireguard_port,
        replay=True,
        pin=False,
    )
    result = ReplayResult(packets=len(capture.packets))
    use_c = fastrun.available() if settings.use_c is None else settings.use_c
    result.runner = "c" if use_c else "python"
    runner = fastrun.run if use_c else fastrun.run_python
    with Datapath.load(settings.object_path, dp_settings) as dp:
        # Replay knows nothing of the capturing node: no listening sockets, no local
        # addresses, so direction comes from the packets and every span is INTERNAL.
        table = FlowTable(
            dp.flows, settings.span, ManualClock(), direction=DirectionResolver(None),
            counters=dp.counters, metrics=False,
        )  # fmt: skip
        prog = dp.program_fd("mermin_ingress")
        pkts = capture.packets
        # polls follow capture time; a capture is not always in order, so use its running max
        clock = np.maximum.accumulate(pkts["ts_ns"].astype(np.int64)) if len(pkts) else pkts
        step = max(1, int(settings.span.poll_interval * 1e9))
        i, n = 0, len(pkts)
        boundary = int(clock[0]) + step if n else 0
        while i < n:
            j = int(np.searchsorted(clock, boundary, side="left"))
            if j > i:
                runner(prog, capture.data, pkts[i:j], _REPLAY_IFINDEX, result.run)
                i = j
            _emit(sink, table.poll(boundary), result)
            if i < n:
                # next boundary; across a quiet gap, jump to the last boundary before the next
                # packet (one poll there ends what timed out during the gap)
                boundary += step * max(1, (int(clock[i]) - boundary) // step)
        if n:
            _emit(sink, table.poll(int(clock[-1])), result)
        _emit(sink, table.flush(EndReason.FORCED_END), result)
        result.kernel = dp.counters()
        result.table = table.stats
        result.polls = table.stats.polls
    result.seconds = time.perf_counter() - began
    return result


def _emit(sink: Sink, reports: list[FlowReport], result: ReplayResult) -> None:
    if reports:
        for r in reports:  # the replay node is not where the capture was taken
            r.iface_index = None
            r.iface_name = None
        result.reports += len(reports)
        sink(reports)
