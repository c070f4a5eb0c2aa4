"""Benchmark: reading and draining the kernel FLOWS map (real kernel map, no traffic).

    sudo uv run python bench/bench_flowmap.py [--flows 100000] [--repeat 5]

Loads build/mermin.bpf.o unpinned with FLOWS sized to --flows, fills it from userspace with
BPF_MAP_UPDATE_BATCH, then times:
  read_all      FlowMap.read_all(): BPF_MAP_LOOKUP_BATCH into numpy, all entries
  take          FlowMap.take() of 10% of the keys (atomic lookup-and-delete, one syscall each)
  delete        FlowMap.delete() of another 10% (BPF_MAP_DELETE_BATCH)
  counters      Datapath.counters() (per-CPU COUNTERS summed)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mermin.datapath import libbpf
from mermin.datapath.abi import KEY_DTYPE, VALUE_DTYPE
from mermin.datapath.loader import Datapath, DatapathSettings


def entries(n: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(n)
    keys = np.zeros(n, KEY_DTYPE)
    keys["addr_a"][:, 0], keys["addr_a"][:, 1] = 10, (i >> 16) & 255
    keys["addr_a"][:, 2], keys["addr_a"][:, 3] = (i >> 8) & 255, i & 255
    keys["addr_b"][:, :4] = (192, 168, 0, 1)
    keys["port_a"], keys["port_b"] = 1024 + (i % 60000), 443
    keys["ip_version"], keys["protocol"] = 4, 6
    values = np.zeros(n, VALUE_DTYPE)
    values["first_seen_ns"] = values["last_seen_ns"] = i
    values["dir"]["packets"] = 10
    return keys, values


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.flows
    keys, values = entries(n)
    with Datapath.load(settings=DatapathSettings(pin=False, flows_capacity=n)) as dp:
        fd = dp.map_fd("FLOWS")
        t = time.perf_counter()
        libbpf.map_update_batch(fd, keys, values, n)
        print(f"fill (update batch) {n} entries: {(time.perf_counter() - t) * 1e3:.1f} ms")
        got = dp.flows.read_all()
        assert len(got[0]) == n
        s = best(dp.flows.read_all, args.repeat)
        print(f"read_all {n} entries: {s * 1e3:.1f} ms ({n / s / 1e6:.2f} M entries/s)")
        tenth = n // 10
        t = time.perf_counter()
        _, found = dp.flows.take(keys[:tenth])
        s = time.perf_counter() - t
        assert found.all()
        print(f"take {tenth} keys: {s * 1e3:.1f} ms ({s / tenth * 1e6:.2f} us per key)")
        t = time.perf_counter()
        deleted = dp.flows.delete(keys[tenth : 2 * tenth])
        s = time.perf_counter() - t
        assert deleted == tenth
        print(f"delete {tenth} keys (batch): {s * 1e3:.1f} ms ({s / tenth * 1e6:.2f} us per key)")
        s = best(dp.counters, args.repeat * 20)
        print(f"counters(): {s * 1e6:.1f} us")


if __name__ == "__main__":
    main()
