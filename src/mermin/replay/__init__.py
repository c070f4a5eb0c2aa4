"""`mermin replay FILE`: the datapath over a pcap/pcapng capture, on capture time.

    mermin replay capture.pcap [--format text|json] [-c CONFIG] [--no-export]

Reports go to stdout (text blocks or JSON lines); with `--config`, span timeouts, parser tunnel
ports, filters and (unless `--no-export`) the config's exporters apply as in `mermin run`.
A summary of packets, damaged records and kernel counters goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from mermin.flows.record import FlowReport
from mermin.replay.capture import Capture, open_capture
from mermin.replay.runner import ReplayResult, ReplaySettings, replay_capture

__all__ = ["Capture", "ReplayResult", "ReplaySettings", "open_capture", "replay_capture", "run"]


def _settings_from_config(config: object | None) -> ReplaySettings:
    if config is None:
        return ReplaySettings()
    parser = config.parser  # type: ignore[attr-defined]
    pipeline = getattr(config, "pipeline", None)
    capacity = 0
    if pipeline is not None:
        capacity = int(getattr(pipeline.flow_capture, "flow_stats_capacity", 0) or 0)
    return ReplaySettings(
        span=config.span,  # type: ignore[attr-defined]
        flows_capacity=capacity,
        vxlan_port=parser.vxlan_port,
        geneve_port=parser.geneve_port,
        wireguard_port=parser.wireguard_port,
    )


def _exporters(config: object) -> list[object]:
    """The config's exporters except stdout (replay prints reports itself, in --format)."""
    from mermin.export import build_exporters
    from mermin.export.resource import build_resource

    exporters = build_exporters(config.export, build_resource({}))  # type: ignore[attr-defined]
    return [e for e in exporters if getattr(e, "name", "") != "stdout"]


def summary(result: ReplayResult) -> str:
    """The stderr summary: what happened to every packet, kernel counters, reports."""
    run, k = result.run, result.kernel
    unparsed = {key[len("unparsed_"):]: v for key, v in k.items() if key.startswith("unparsed_")
                and v}  # fmt: skip
    parts = [
        f"replay: {result.packets} packets: {run.ok} through the datapath",
        f"{run.damaged} damaged records",
        f"{run.linktype} on unsupported link types",
        f"{run.short} too short",
        f"{run.rejected} rejected by the kernel",
    ]
    kern = (
        f"kernel: seen {k.get('seen', 0)}, counted {k.get('counted', 0)}, "
        f"duplicate {k.get('duplicate', 0)}, map_full {k.get('map_full', 0)}, "
        f"unparsed {sum(unparsed.values())}"
        + (f" ({', '.join(f'{a} {b}' for a, b in sorted(unparsed.items()))})" if unparsed else "")
        + f", fragments untracked {k.get('frag_unmatched', 0) + k.get('frag_map_full', 0)}"
    )
    t = result.table
    tail = (
        f"flows: {t.flows_created}, reports: {result.reports}, polls: {result.polls}, "
        f"{result.seconds:.2f}s ({result.runner} runner)"
    )
    return "; ".join(parts) + "\n" + kern + "\n" + tail


def run(args: argparse.Namespace) -> int:
    """Entry point of `mermin replay` (see module docstring)."""
    from mermin.replay.output import printer

    config = None
    if getattr(args, "config", None):
        from mermin.config.loader import load_config

        config = load_config(args.config)
    settings = _settings_from_config(config)
    sink: Callable[[list[FlowReport]], None] = printer(args.format, sys.stdout)
    stages: list[Callable[[list[FlowReport]], list[FlowReport]]] = []
    exporters: list[object] = []
    if config is not None:
        from mermin.filters import FlowFilter

        flt = FlowFilter.from_config(config)
        stages.append(flt.apply)
        if not args.no_export:
            exporters = _exporters(config)
            for e in exporters:
                e.start()  # type: ignore[attr-defined]

    def pipeline(reports: list[FlowReport]) -> None:
        for stage in stages:
            reports = stage(reports)
        if reports:
            sink(reports)
            for e in exporters:
                e.export(reports)  # type: ignore[attr-defined]

    with open_capture(args.file) as capture:
        try:
            result = replay_capture(capture, settings, pipeline)
        finally:
            timeout = float(getattr(config, "shutdown_timeout", 10.0) or 10.0) if config else 10.0
            for e in exporters:
                e.shutdown(timeout)  # type: ignore[attr-defined]
    sys.stdout.flush()
    print(summary(result), file=sys.stderr)
    return 0
