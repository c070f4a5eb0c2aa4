"""Interface discovery: attach latency of a new interface, and bursts of veth pairs.

    sudo uv run python bench/bench_interfaces.py [--burst 500] [--singles 20] [--modes tcx,tc]

For each attach mode, with the real kernel program (build/mermin.bpf.o, not pinned) and the
real Attacher under an InterfaceManager watching names `mib<hex>*` in the root namespace:

* single: create one veth pair at a time (`ip link add`); the time from just before the command
  until the manager has attached both programs (p50/p95/max over `--singles` interfaces);
* burst: create `--burst` pairs with `ip -batch` and time until all are attached, then delete
  them and time until all are detached. The same create/delete without any agent running is
  timed too: it is the kernel's own share;
* raw: the cost of one attach and one detach call (both directions), interfaces already there.

Everything it creates is removed on exit.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mermin.config.discovery import InstrumentConfig  # noqa: E402
from mermin.datapath.attach import Attacher  # noqa: E402
from mermin.datapath.loader import Datapath, DatapathSettings  # noqa: E402
from mermin.interfaces.manager import InterfaceManager  # noqa: E402
from mermin.interfaces.watcher import LinkSocket  # noqa: E402


def batch(lines: list[str]) -> None:
    subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                   check=False, capture_output=True)  # fmt: skip


def wait(cond: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.001)
    return time.monotonic() - t0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def bench_mode(dp: Datapath, mode: str, singles: int, burst: int) -> None:
    tag = f"mib{secrets.token_hex(2)}"
    attacher = Attacher(dp, mode=mode)
    cfg = InstrumentConfig(interfaces=[f"{tag}*"], exclude=[f"{tag}*p"], netns="current",
                           attach_mode=mode)  # fmt: skip
    mgr = InterfaceManager(cfg, attacher)
    mgr.start()
    names: list[str] = []
    try:
        lat = []
        for i in range(singles):
            name = f"{tag}s{i:03d}"
            names.append(name)
            t0 = time.monotonic()
            subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name",
                            name + "p"], check=True)  # fmt: skip
            wait(lambda n=name: n in attacher.attached.values(), 5.0)
            lat.append((time.monotonic() - t0) * 1000)
        print(f"[{mode}] single new interface -> attached: p50 {pct(lat, .5):.1f} ms, "
              f"p95 {pct(lat, .95):.1f} ms, max {max(lat):.1f} ms (n={singles})")  # fmt: skip
        batch([f"link del {n}" for n in names])
        wait(lambda: not attacher.attached, 30.0)
        names = [f"{tag}{i:04d}" for i in range(burst)]
        t0 = time.monotonic()
        batch([f"link add {n} type veth peer name {n}p" for n in names])
        created = time.monotonic() - t0
        wait(lambda: len(attacher.attached) == burst, 600.0)
        attached = time.monotonic() - t0
        t0 = time.monotonic()
        batch([f"link del {n}" for n in names])
        deleted = time.monotonic() - t0
        wait(lambda: not attacher.attached, 600.0)
        detached = time.monotonic() - t0
        ws = mgr.watcher.stats if mgr.watcher else None
        print(f"[{mode}] burst of {burst} pairs: created in {created:.2f}s, all attached after "
              f"{attached:.2f}s ({attached / burst * 1000:.1f} ms/interface); deleted in "
              f"{deleted:.2f}s, all detached after {detached:.2f}s; stats {mgr.stats.as_dict()}"
              f"; netlink overruns {ws.overruns if ws else '?'}")  # fmt: skip
    finally:
        mgr.stop()
        batch([f"link del {n}" for n in names])


def bench_raw(dp: Datapath, mode: str, count: int) -> None:
    tag = f"mib{secrets.token_hex(2)}"
    names = [f"{tag}r{i:03d}" for i in range(count)]
    batch([f"link add {n} type veth peer name {n}p" for n in names])
    try:
        index = {lk.name: lk.index for lk in LinkSocket(subscribe=False).dump().values()}
        attacher = Attacher(dp, mode=mode)
        t0 = time.perf_counter()
        for n in names:
            attacher.attach(index[n], n)
        ta = (time.perf_counter() - t0) / count * 1000
        t0 = time.perf_counter()
        attacher.detach_all()
        td = (time.perf_counter() - t0) / count * 1000
        print(f"[{mode}] raw Attacher cost per interface (2 programs): attach {ta:.1f} ms, "
              f"detach {td:.1f} ms (n={count})")  # fmt: skip
    finally:
        batch([f"link del {n}" for n in names])


def kernel_only(burst: int) -> None:
    names = [f"mib{secrets.token_hex(2)}{i:04d}" for i in range(burst)]
    t0 = time.monotonic()
    batch([f"link add {n} type veth peer name {n}p" for n in names])
    created = time.monotonic() - t0
    t0 = time.monotonic()
    batch([f"link del {n}" for n in names])
    print(f"[no agent] {burst} pairs: created in {created:.2f}s, deleted in "
          f"{time.monotonic() - t0:.2f}s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--singles", type=int, default=20)
    ap.add_argument("--raw", type=int, default=100)
    ap.add_argument("--modes", default="tcx,tc")
    args = ap.parse_args()
    kernel_only(args.burst)
    obj = REPO / "build" / "mermin.bpf.o"
    with Datapath.load(obj, DatapathSettings(pin=False, flows_capacity=4096)) as dp:
        for mode in args.modes.split(","):
            bench_raw(dp, mode, args.raw)
            bench_mode(dp, mode, args.singles, args.burst)


if __name__ == "__main__":
    main()
