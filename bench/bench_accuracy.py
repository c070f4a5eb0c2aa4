"""Accuracy under load: per-flow packets and bytes each observer reports vs what was sent.

    sudo uv run python bench/bench_accuracy.py [--rates 20k,50k,100k,200k,max] [--seconds 5]
        [--observers datapath,mermin,softflowd,fprobe,pmacctd,argus] [--markdown]

One iperf3 UDP flow of 64-byte datagrams from the client namespace to the server, at each
target rate (datagrams per second; `max` = `-b 0`, as fast as iperf3 goes), once per observer.
Ground truth per flow: iperf3's own datagram count (+ its one 4-byte connect datagram) and
IP bytes = payload + 28 bytes of IPv4/UDP header per datagram. Before counts are read, 3,000
datagrams of another flow push the test's last packets through the peers' libpcap rings
(without that, each peer "missed" the 100-400 packets still waiting in a half-full ring
block). Columns:

    sent kpps   datagrams per second the client pushed through its veth
    srv loss %  datagrams iperf3's server did not receive (the receiver giving up: after the
                observation point, so it must not affect the observers' counts)
    pkts %, bytes %   reported / truth for the data flow (100.000 = exact)
    missing     truth - reported packets
    drops       what the observer's own loss counters say it lost (kernel: map_full,
                unparsed_*; agent: those plus export drops; pcap peers: pcap drops, export
                sequence gaps)
    explained   `yes` when every missing packet shows up in a drop counter

Target for mermin: 100 % at every rate, and any loss visible in a drop counter.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import BenchNet, format_table, install_stop_signals, machine_line
from bench_observers import OBSERVERS
from bench_overhead import RunResult, measure, select_observers

__all__ = ["main", "parse_args", "parse_rate", "rate_arg", "rows_for"]

PAYLOAD = 64


def parse_rate(text: str) -> int | None:
    """'50k' -> 50000 datagrams/s, '1.5M' -> 1500000, 'max' -> None (as fast as possible)."""
    text = text.strip().lower()
    if text in ("max", "0"):
        return None
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    value = float(text[:-1] if mult > 1 else text) * mult
    if value <= 0:
        raise ValueError(f"rate must be > 0: {text!r}")
    return int(value)


def rate_arg(pps: int | None) -> str:
    """iperf3 `-b` for a datagram rate (iperf3 counts payload bits)."""
    return "0" if pps is None else str(pps * PAYLOAD * 8)


def rows_for(label: str, r: RunResult, lost_pct: float) -> list[object]:
    missing = (r.truth or 0) - (r.reported or 0)
    dropped = sum(r.drops.values())
    explained = "yes" if missing <= 0 or dropped >= missing else "NO"
    return [label, r.observer, r.pps / 1e3, lost_pct,
            f"{r.accuracy:.3f}" if r.accuracy is not None else None,
            f"{r.byte_accuracy:.3f}" if r.byte_accuracy is not None else None,
            missing, ", ".join(f"{k}={v}" for k, v in r.drops.items()) or "0", explained]


HEADERS = ["rate", "observer", "sent kpps", "srv loss %", "pkts %", "bytes %", "missing",
           "drops", "explained"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="20k,50k,100k,200k,max",
                        help="target datagrams/s, comma-separated (k, M suffixes; max)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--observers", default="datapath,mermin,softflowd,fprobe,pmacctd,argus")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.rates = [(r, parse_rate(r)) for r in args.rates.split(",") if r]
    except ValueError as exc:
        parser.error(str(exc))
    args.observers = [o for o in args.observers.split(",") if o and o != "none"]
    for o in args.observers:
        if o not in OBSERVERS:
            parser.error(f"unknown observer {o!r}; choose from {', '.join(OBSERVERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_stop_signals()
    observers = select_observers(args.observers)
    print(f"# bench_accuracy: {machine_line()}")
    print(f"# one UDP flow of {PAYLOAD}-byte datagrams, {args.seconds:g}s per rate; "
          f"observers: {', '.join(observers)}", flush=True)
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="mb-accuracy-") as tmp, BenchNet() as net:
        for label, pps in args.rates:
            for name in observers:
                wd = Path(tmp) / f"{name}-{label}"
                wd.mkdir()
                try:
                    r, lost = _one(net, name, args.seconds, wd, pps)
                except RuntimeError as exc:
                    print(f"# {name} at {label}: failed: {exc}", flush=True)
                    continue
                rows.append(rows_for(label, r, lost))
                print("# " + "  ".join(str(c) for c in rows[-1]), flush=True)
    print()
    print(format_table(HEADERS, rows, markdown=args.markdown))
    return 0


def _one(net: BenchNet, name: str, seconds: float, wd: Path,
         pps: int | None) -> tuple[RunResult, float]:
    r = measure(net, name, "udp-64", seconds, wd, rate=rate_arg(pps))
    sent = (r.truth or 1) - 1
    lost = 100.0 * r.server_lost / sent if sent > 0 else 0.0
    return r, lost


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything was cleaned up", file=sys.stderr)
        sys.exit(130)
