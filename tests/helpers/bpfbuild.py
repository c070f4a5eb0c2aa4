"""BPF test plumbing: compile small test-only programs, mount a private BPF filesystem.

Used by the datapath tests for behaviour the real program cannot show on purpose (a verifier
rejection, a map with the ABI types filled from userspace). Same flags as the Makefile.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

__all__ = ["REPO", "STANDIN", "compile_bpf", "private_bpffs"]

REPO = Path(__file__).resolve().parents[2]
_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64"}.get(platform.machine(), platform.machine())


def compile_bpf(source: str, out_dir: Path, name: str = "test") -> Path:
    """Compile `source` (C) to `out_dir/<name>.bpf.o`; bpf/ is on the include path."""
    src = out_dir / f"{name}.bpf.c"
    obj = out_dir / f"{name}.bpf.o"
    src.write_text(source)
    clang = os.environ.get("CLANG", "clang")
    argv = [
        clang, "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
        f"-I/usr/include/{_ARCH}-linux-gnu", f"-I{REPO / 'bpf'}", "-c", str(src), "-o", str(obj),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"clang failed on {src}:\n{proc.stderr}")
    return obj


@contextlib.contextmanager
def private_bpffs(prefix: str = "ml") -> Iterator[Path]:
    """A BPF filesystem instance of our own, mounted on a fresh temporary directory.

    Pins made there are invisible to everyone else and all go away at unmount, so tests never
    touch /sys/fs/bpf (which may not even be mounted on a test machine).
    """
    mnt = Path(tempfile.mkdtemp(prefix=f"{prefix}bpffs"))
    subprocess.run(["mount", "-t", "bpf", "bpf", str(mnt)], check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


# A stand-in with Mermin's maps, config and program names: each program counts SEEN, puts
# one FLOWS entry keyed by skb->ifindex (first byte of addr_a), stores skb->tstamp as
# last_seen_ns, and returns cfg.vxlan_port + cfg.replay so the test sees the .rodata config.
STANDIN = textwrap.dedent(
    """
    #include <linux/bpf.h>
    #include <bpf/bpf_helpers.h>
    #include "flow.h"

    const volatile __u32 padding_before_cfg = 1;
    const volatile struct mermin_config cfg = { .vxlan_port = 4789 };

    struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024);
             __type(key, struct flow_key); __type(value, struct flow_value); } FLOWS SEC(".maps");
    struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, MERMIN_CNT_MAX);
             __type(key, __u32); __type(value, __u64); } COUNTERS SEC(".maps");
    struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 256);
             __type(key, __u32); __type(value, __u32); } FRAGS SEC(".maps");

    static int handle(struct __sk_buff *skb)
    {
        __u32 idx = MERMIN_CNT_SEEN;
        __u64 *cnt = bpf_map_lookup_elem(&COUNTERS, &idx);
        struct flow_key key = {};
        struct flow_value val = {};

        if (cnt)
            *cnt += 1;
        key.addr_a[0] = skb->ifindex;
        key.ip_version = 4;
        val.last_seen_ns = skb->tstamp;
        val.dir[0].packets = 1;
        bpf_map_update_elem(&FLOWS, &key, &val, BPF_ANY);
        return cfg.vxlan_port + cfg.replay + (padding_before_cfg - 1);
    }

    SEC("tc") int mermin_ingress(struct __sk_buff *skb) { return handle(skb); }
    SEC("tc") int mermin_egress(struct __sk_buff *skb) { return handle(skb); }
    char LICENSE[] SEC("license") = "GPL";
    """
)
