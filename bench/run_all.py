"""Run the traffic benchmarks one after the other and print their tables.

    sudo uv run python bench/run_all.py [--quick] [--markdown] [--skip overhead,accuracy,scale]

    overhead   bench_overhead.py: iperf3 TCP 1/8 streams and UDP 64 B with no observer, mermin's
               kernel program alone, the whole agent, and softflowd/fprobe/pmacctd/argus;
               throughput, CPU per million packets, softirq, RSS, accuracy (median of 3
               interleaved rounds of 5 s; --quick: 1 round of 2 s)
    accuracy   bench_accuracy.py: one UDP flow at 20k..max datagrams/s, per-flow counts vs
               iperf3's, every loss checked against the observers' drop counters
    scale      bench_scale.py: new TCP connections/s through the agent (reports missing or
               late), and the agent's RSS with 100,000 active flows

Each part is also runnable alone (see its --help). Needs root (namespaces, eBPF), iperf3
and `make bpf`; missing peers are installed with apt-get. Takes about 15 minutes
(--quick: about 5). Everything is cleaned up on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_accuracy
import bench_overhead
import bench_scale

__all__ = ["PARTS", "main", "plan"]

PARTS = ("overhead", "accuracy", "scale")


def plan(quick: bool, markdown: bool) -> dict[str, list[str]]:
    """argv of each part."""
    md = ["--markdown"] if markdown else []
    if quick:
        return {
            "overhead": ["--seconds", "2", "--repeat", "1", *md],
            "accuracy": ["--seconds", "2", "--rates", "50k,max", *md],
            "scale": ["--seconds", "4", "--rates", "1000,max", "--flows", "100000", *md],
        }
    return {
        "overhead": ["--seconds", "5", "--repeat", "3", *md],
        "accuracy": ["--seconds", "5", "--rates", "20k,50k,100k,200k,max", *md],
        "scale": ["--seconds", "10", "--rates", "500,1000,2000,4000,8000,16000,max", *md],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke check)")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if not skip <= set(PARTS):
        parser.error(f"--skip takes {', '.join(PARTS)}")
    if os.geteuid() != 0:
        parser.error("needs root: network namespaces and eBPF (sudo uv run python ...)")
    mains = {"overhead": bench_overhead.main, "accuracy": bench_accuracy.main,
             "scale": bench_scale.main}
    for part, part_argv in plan(args.quick, args.markdown).items():
        if part in skip:
            continue
        print(f"\n## {part}: {' '.join(part_argv)}\n", flush=True)
        rc = mains[part](part_argv)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything was cleaned up", file=sys.stderr)
        sys.exit(130)
