"""Config loading benchmark (not collected): `uv run python tests/config/bench_load.py`."""

from __future__ import annotations

import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def main() -> None:
    t0 = time.perf_counter()
    from mermin.config.loader import load_config

    t1 = time.perf_counter()
    load_config(str(EXAMPLES / "config.example.hcl"), environ={})
    t2 = time.perf_counter()
    for _ in range(20):
        load_config(str(EXAMPLES / "config.example.hcl"), environ={})
    t3 = time.perf_counter()
    for _ in range(20):
        load_config(str(EXAMPLES / "config.example.yaml"), environ={})
    t4 = time.perf_counter()
    print(
        f"import {1e3 * (t1 - t0):.0f} ms; first HCL load {1e3 * (t2 - t1):.0f} ms; "
        f"HCL load {1e3 * (t3 - t2) / 20:.1f} ms; YAML load {1e3 * (t4 - t3) / 20:.1f} ms"
    )


if __name__ == "__main__":
    main()
