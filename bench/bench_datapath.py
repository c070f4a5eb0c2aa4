"""Per-packet cost of the kernel datapath, against a minimal reference program.

    make bpf && uv run python bench/bench_datapath.py [--repeat 1000000] [--rounds 5]

Runs as root. Every case runs the same frame through `mermin_ingress` (build/mermin.bpf.o)
and through `ref_count` (build/ref_count.bpf.o: Ethernet + IPv4/IPv6 + ports, one counter per
5-tuple in a hash map) with BPF_PROG_TEST_RUN and `--repeat` repetitions; the kernel reports
the mean ns per run. The best of `--rounds` rounds is kept (the machine is shared), the two
programs are measured alternately.

Existing-flow cases run the frame once first, so the timed runs update an existing entry.
The new-flow case sets the `bench_new_flows` .rodata switch of both programs: each run then
XORs a per-run sequence number into the key's destination address, so each of the `--repeat`
runs inserts a new flow (the maps are sized for that); it is 0 in production and the verifier
removes the code it guards.

Then loads both objects with `bpftool prog loadall` into a temporary pin directory (removed
afterwards) and reports per program: xlated instructions, jited bytes and x86 instructions,
instructions the verifier processed, and the stack depth from the verifier log.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.datapath.packets import L2, Conv, TcpOpts, tcp, vxlan  # noqa: E402

from mermin.datapath import libbpf  # noqa: E402
from mermin.datapath.loader import DatapathSettings  # noqa: E402

MERMIN = REPO / "build" / "mermin.bpf.o"
REF = REPO / "build" / "ref_count.bpf.o"
V4 = Conv("10.0.0.2", "10.0.0.1", 40000, 80)
V6 = Conv("fd00::2", "fd00::1", 40000, 80)


def cases() -> list[tuple[str, bytes]]:
    outer = Conv("192.0.2.1", "192.0.2.2", 51000, 4789)
    return [
        ("IPv4 TCP ACK, existing flow", tcp(V4, TcpOpts("A"))),
        ("IPv6 TCP ACK, existing flow", tcp(V6, TcpOpts("A"))),
        ("IPv4 TCP 100 B data, existing flow (*)", tcp(V4, TcpOpts("PA", payload=bytes(100)))),
        ("VXLAN (IPv4) + IPv4 TCP, existing flow", vxlan(tcp(V4, TcpOpts("A")), outer)),
        ("QinQ + IPv4 TCP, existing flow (**)", tcp(V4, TcpOpts("A"), l2=L2((100, 200), 0x88A8))),
    ]


def open_obj(path: Path, prog_map: str, capacity: int, new_flows: bool) -> libbpf.BpfObject:
    obj = libbpf.BpfObject.open(path)
    if path == MERMIN:
        obj.set_rodata_var("cfg", DatapathSettings().config_bytes())
    obj.set_rodata_var("bench_new_flows", b"\x01" if new_flows else b"\x00")
    obj.map(prog_map).set_max_entries(capacity)
    obj.load()
    return obj


def best_ns(fd: int, frame: bytes, repeat: int, rounds: int) -> int:
    libbpf.prog_test_run(fd, frame)  # creates the flow
    return min(libbpf.prog_test_run(fd, frame, None, repeat)[1] for _ in range(rounds))


def measure(repeat: int, rounds: int) -> list[tuple[str, int, int]]:
    rows = []
    ours = open_obj(MERMIN, "FLOWS", 65536, False)
    ref = open_obj(REF, "REF_FLOWS", 65536, False)
    try:
        fd_ours, fd_ref = ours.program_fd("mermin_ingress"), ref.program_fd("ref_count")
        for name, frame in cases():
            a = b = 1 << 62
            for _ in range(rounds):  # alternate, so both see the same machine load
                a = min(a, best_ns(fd_ours, frame, repeat, 1))
                b = min(b, best_ns(fd_ref, frame, repeat, 1))
            rows.append((name, a, b))
    finally:
        ours.close()
        ref.close()
    # new flows: one round (every run inserts; the maps hold all of them)
    frame = tcp(V4, TcpOpts("S"))
    capacity = repeat + 1024
    results = []
    for path, map_name, prog in ((MERMIN, "FLOWS", "mermin_ingress"), (REF, "REF_FLOWS",
                                                                         "ref_count")):  # fmt: skip
        obj = open_obj(path, map_name, capacity, True)
        try:
            results.append(libbpf.prog_test_run(obj.program_fd(prog), frame, None, repeat)[1])
        finally:
            obj.close()
    rows.append(("IPv4 TCP SYN, new flow each run", results[0], results[1]))
    return rows


# --------------------------------------------------------------------------------------------
# Program sizes and stack
# --------------------------------------------------------------------------------------------
def jited_image(prog_fd: int) -> bytes:
    """The JIT image through BPF_OBJ_GET_INFO_BY_FD (bpftool here has no libbfd to dump it)."""
    info = (ctypes.c_ubyte * 256)()
    size = ctypes.c_uint32(256)
    lib = libbpf.lib()
    libbpf.check(lib.bpf_obj_get_info_by_fd(prog_fd, info, ctypes.byref(size)), "prog info")
    jited_len = int.from_bytes(bytes(info[16:20]), "little")
    image = (ctypes.c_ubyte * jited_len)()
    info2 = (ctypes.c_ubyte * 256)()
    info2[16:20] = list(jited_len.to_bytes(4, "little"))
    info2[24:32] = list(ctypes.addressof(image).to_bytes(8, "little"))
    size = ctypes.c_uint32(256)
    libbpf.check(lib.bpf_obj_get_info_by_fd(prog_fd, info2, ctypes.byref(size)), "prog info")
    return bytes(image)


def x86_instructions(image: bytes) -> int | None:
    if not shutil.which("objdump"):
        return None
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(image)
        f.flush()
        out = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64", f.name],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    return sum(1 for line in out.splitlines() if re.match(r"^\s+[0-9a-f]+:\t", line))


def program_stats(obj_path: Path) -> list[dict]:
    pin = Path(f"/sys/fs/bpf/mk_bench_{os.getpid()}")
    try:
        log = subprocess.run(["bpftool", "-d", "prog", "loadall", str(obj_path), str(pin)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        verifier: dict[str, dict] = {}
        current = None
        for line in (log.stdout + log.stderr).splitlines():
            if m := re.search(r"prog '(\w+)': -- BEGIN PROG LOAD LOG --", line):
                current = verifier.setdefault(m.group(1), {})
            elif current is not None and (m := re.match(r"stack depth ([\d+]+)", line)):
                current["stack"] = m.group(1)
            elif current is not None and (m := re.match(r"processed (\d+) insns", line)):
                current["verified"] = int(m.group(1))
        out = []
        for prog in sorted(pin.iterdir()):
            show = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "pinned",
                                              str(prog)], capture_output=True, text=True,
                                             check=True).stdout)  # fmt: skip
            fd = libbpf.obj_get(prog)
            try:
                x86 = x86_instructions(jited_image(fd))
            finally:
                libbpf.close_fd(fd)
            v = verifier.get(show["name"], {})
            stack = v.get("stack", "?")
            out.append({
                "program": show["name"],
                "xlated_insns": show["bytes_xlated"] // 8,
                "jited_bytes": show["bytes_jited"],
                "jited_insns": x86,
                "verified_insns": v.get("verified"),
                "stack": f"{stack} = {sum(int(x) for x in stack.split('+'))}" if "+" in stack
                else stack,
            })  # fmt: skip
        return out
    finally:
        shutil.rmtree(pin, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (BPF_PROG_TEST_RUN, bpftool)", file=sys.stderr)
        return 1
    for path in (MERMIN, REF):
        if not path.exists():
            print(f"{path} is missing: run `make bpf`", file=sys.stderr)
            return 1
    print(f"repeat={args.repeat} rounds={args.rounds} kernel={os.uname().release}\n")
    print("| case | mermin ns/pkt | reference ns/pkt | ratio |")
    print("|---|---:|---:|---:|")
    for name, ours, ref in measure(args.repeat, args.rounds):
        print(f"| {name} | {ours} | {ref} | {ours / ref:.2f} |")
    print("\n(*) each repetition repeats the same sequence space: counted as a retransmit.")
    print("(**) the reference does not parse VLAN tags: it stops at the ethertype.\n")
    print("| program | xlated insns | jited bytes | jited x86 insns | verifier-processed insns "
          "| stack bytes |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|")
    for obj in (MERMIN, REF):
        for s in program_stats(obj):
            print(f"| {s['program']} | {s['xlated_insns']} | {s['jited_bytes']} | "
                  f"{s['jited_insns']} | {s['verified_insns']} | {s['stack']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
