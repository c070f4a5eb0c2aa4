"""Benchmark: `mermin replay` vs `tshark -q -z conv,tcp -z conv,udp` on one capture.

    uv run python bench/bench_replay.py [--packets 1000000] [--path /tmp/mermin-bench.pcap]

Generates a synthetic Ethernet pcap (bench/replay_capture.py: TCP conversations with handshake,
data both ways and FIN close, plus UDP request/response flows) unless it exists, then times one
run of each tool on it (the file is read once beforehand so both start from the page cache)
and prints both times and the ratio. The replay runs as the real command, JSON output to
/dev/null, in a fresh interpreter (its start-up is included).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay_capture import generate_capture


def timed(cmd: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=True)  # fmt: skip
    return time.perf_counter() - began, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--path", default="/tmp/mermin-bench-replay.pcap")
    parser.add_argument("--keep", action="store_true", help="keep the generated capture")
    args = parser.parse_args()
    path = Path(args.path)
    if not path.exists():
        began = time.perf_counter()
        info = generate_capture(path, args.packets)
        print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB, {info}) in "
              f"{time.perf_counter() - began:.1f}s")  # fmt: skip
    path.read_bytes()  # warm the page cache for both tools
    mermin = [sys.executable, "-m", "mermin.cli", "replay", str(path), "--format", "json"]
    t_mermin, summary = timed(mermin)
    tshark = shutil.which("tshark")
    if tshark is None:
        raise SystemExit("tshark not installed")
    t_tshark, _ = timed([tshark, "-n", "-r", str(path), "-q", "-z", "conv,tcp", "-z",
                         "conv,udp"])  # fmt: skip
    print(summary.strip())
    print(f"mermin replay : {t_mermin:6.2f} s  ({args.packets / t_mermin:,.0f} packets/s)")
    print(f"tshark conv   : {t_tshark:6.2f} s  ({args.packets / t_tshark:,.0f} packets/s)")
    print(f"ratio tshark/mermin: {t_tshark / t_mermin:.2f}x")
    if not args.keep:
        path.unlink()


if __name__ == "__main__":
    main()
