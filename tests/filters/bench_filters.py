"""FlowFilter benchmark (not collected): `uv run python tests/filters/bench_filters.py`.

10,000 synthetic TCP/IPv4 flows with distinct source addresses, then 90,000 more reports of
the same flows, filtered with examples/config.example.hcl's filter blocks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_filters import report  # noqa: E402

from mermin.config.loader import load_config  # noqa: E402
from mermin.filters import FlowFilter  # noqa: E402

FLOWS, REPORTS = 10_000, 100_000


def main() -> None:
    config = load_config(str(HERE.parents[1] / "examples" / "config.example.hcl"), environ={})
    flows = [
        report(src_addr=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", dst_port=80 + i % 2000,
               flow_id=i + 1)
        for i in range(FLOWS)
    ]  # fmt: skip
    batch = [flows[i % FLOWS] for i in range(REPORTS)]
    t0 = time.perf_counter()
    flt = FlowFilter.from_config(config)
    t1 = time.perf_counter()
    flt.apply(batch[:FLOWS])  # first report of every flow: static rules evaluated
    t2 = time.perf_counter()
    kept = flt.apply(batch[FLOWS:])  # later reports: static verdicts from the cache
    t3 = time.perf_counter()
    print(f"compile {1e3 * (t1 - t0):.1f} ms; first report {1e9 * (t2 - t1) / FLOWS:.0f} ns; "
          f"cached {1e9 * (t3 - t2) / (REPORTS - FLOWS):.0f} ns/report; kept {len(kept)}; "
          f"stats {flt.stats}")  # fmt: skip


if __name__ == "__main__":
    main()
