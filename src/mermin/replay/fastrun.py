"""ctypes binding of build/libmermin_replay.so (`_fastrun.c`): index a capture, run packets.

Per-packet Python (reading records, one ctypes call per BPF_PROG_TEST_RUN) costs several
microseconds a packet; the C loops cost about one, most of it the syscall itself. When the
library is missing (`make replay` not run), `run_python` does the same work in Python.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mermin.errors import DatapathError

__all__ = ["RunCounts", "available", "index", "library_path", "run", "run_python"]

_REPO = Path(__file__).resolve().parents[3]
_CANDIDATES = (_REPO / "build" / "libmermin_replay.so", Path("/usr/lib/mermin/libmermin_replay.so"))
_MAX_IFACES = 256
_MAX_FRAME = 3584  # MR_MAX_FRAME in _fastrun.c


class _Reader(ctypes.Structure):
    """struct mr_reader in _fastrun.c."""

    _fields_ = [
        ("format", ctypes.c_uint32),
        ("swapped", ctypes.c_uint32),
        ("linktype", ctypes.c_uint32),
        ("nsec", ctypes.c_uint32),
        ("n_ifaces", ctypes.c_uint32),
        ("if_linktype", ctypes.c_uint32 * _MAX_IFACES),
        ("if_mul", ctypes.c_uint64 * _MAX_IFACES),
        ("if_div", ctypes.c_uint64 * _MAX_IFACES),
        ("last_ts", ctypes.c_uint64),
        ("bad_blocks", ctypes.c_uint64),
    ]


@dataclass
class RunCounts:
    """Outcome of each packet handed to the runner (enum in _fastrun.c, same order)."""

    ok: int = 0  # went through the kernel program
    damaged: int = 0  # truncated record or unknown interface in the file
    linktype: int = 0  # on an interface whose link type replay cannot use
    short: int = 0  # shorter than its link-layer header
    rejected: int = 0  # the kernel refused it (EINVAL)

    def add(self, values: np.ndarray | list[int]) -> None:
        self.ok += int(values[0])
        self.damaged += int(values[1])
        self.linktype += int(values[2])
        self.short += int(values[3])
        self.rejected += int(values[4])


_lib: ctypes.CDLL | None = None
_tried = False


def library_path() -> Path | None:
    env = os.environ.get("MERMIN_REPLAY_LIB")
    if env:
        return Path(env)
    return next((p for p in _CANDIDATES if p.is_file()), None)


def _load() -> ctypes.CDLL | None:
    global _lib, _tried
    if not _tried:
        _tried = True
        path = library_path()
        if path is not None:
            lib = ctypes.CDLL(str(path))
            lib.mr_index.restype = ctypes.c_long
            lib.mr_index.argtypes = [ctypes.POINTER(_Reader), ctypes.c_void_p, ctypes.c_uint64,
                                     ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p,
                                     ctypes.c_uint64]  # fmt: skip
            lib.mr_run.restype = ctypes.c_long
            lib.mr_run.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_uint64)]  # fmt: skip
            _lib = lib
    return _lib


def available() -> bool:
    """True when the C helper is built and loadable."""
    return _load() is not None


def _address(data: mmap.mmap | bytes) -> tuple[int, np.ndarray]:
    """Address of the capture bytes (and the array keeping it alive)."""
    arr = np.frombuffer(data, dtype=np.uint8) if len(data) else np.zeros(1, np.uint8)
    return arr.ctypes.data, arr


def index(data: mmap.mmap | bytes, fmt: str, swapped: bool, nsec: bool, linktype: int
          ) -> np.ndarray:  # fmt: skip
    """Every packet record of the capture as a PKT_DTYPE array."""
    from mermin.replay.capture import PKT_DTYPE

    lib = _load()
    assert lib is not None
    reader = _Reader(format=1 if fmt == "pcap" else 2, swapped=int(swapped), linktype=linktype,
                     nsec=int(nsec))  # fmt: skip
    addr, keep = _address(data)
    pos = ctypes.c_uint64(24 if fmt == "pcap" else 0)
    size = len(data)
    out = np.zeros(min(size // 16 + 2, 1 << 20), dtype=PKT_DTYPE)  # grown as needed
    total = 0
    while True:
        n = lib.mr_index(ctypes.byref(reader), addr, size, ctypes.byref(pos),
                         out.ctypes.data + total * PKT_DTYPE.itemsize, len(out) - total)
        if n < 0:
            raise DatapathError(f"capture indexer failed: {os.strerror(-n)}")
        total += n
        if pos.value >= size or n == 0:
            break
        if total == len(out):
            out = np.concatenate([out, np.zeros(len(out), dtype=PKT_DTYPE)])
    del keep
    return out[:total].copy()


def run(prog_fd: int, data: mmap.mmap | bytes, packets: np.ndarray, ifindex: int = 1,
        counts: RunCounts | None = None) -> RunCounts:  # fmt: skip
    """Run `packets` (a contiguous PKT_DTYPE array) through the program in C."""
    lib = _load()
    counts = counts or RunCounts()
    if lib is None:
        return run_python(prog_fd, data, packets, ifindex, counts)
    packets = np.ascontiguousarray(packets)
    addr, keep = _address(data)
    acc = np.zeros(5, np.uint64)
    failed = ctypes.c_uint64(0)
    ret = lib.mr_run(prog_fd, addr, packets.ctypes.data, len(packets), ifindex,
                     acc.ctypes.data, ctypes.byref(failed))  # fmt: skip
    del keep
    counts.add(acc)
    if ret < 0:
        raise DatapathError(
            f"BPF_PROG_TEST_RUN failed at packet {int(failed.value)}: {os.strerror(-ret)}"
            + (" (run as root or with CAP_BPF + CAP_NET_ADMIN)" if -ret == errno.EPERM else "")
        )
    return counts


_ETH_PREFIX = bytes.fromhex("020000000002" "020000000001")


def _frame(data: memoryview, pkt: np.void, counts: RunCounts) -> tuple[bytes, int] | None:
    """(Ethernet frame, wire length) for one packet, as `to_ethernet` in _fastrun.c."""
    off, caplen, orig, lt = int(pkt["offset"]), int(pkt["caplen"]), int(pkt["origlen"]), int(
        pkt["linktype"]
    )
    raw = data[off : off + caplen]
    if lt == 1:
        if caplen < 14:
            counts.short += 1
            return None
        return bytes(raw[:_MAX_FRAME]), max(orig, caplen)
    if lt in (113, 276):
        hdr = 16 if lt == 113 else 20
        if caplen < hdr:
            counts.short += 1
            return None
        proto = bytes(raw[14:16]) if lt == 113 else bytes(raw[0:2])
    elif lt in (12, 14, 101, 228, 229):
        hdr = 0
        if caplen < 1:
            counts.short += 1
            return None
        version = raw[0] >> 4
        if lt == 228 or (lt != 229 and version == 4):
            proto = b"\x08\x00"
        elif lt == 229 or version == 6:
            proto = b"\x86\xdd"
        else:
            proto = b"\x00\x00"
    else:
        counts.linktype += 1
        return None
    frame = (_ETH_PREFIX + proto + bytes(raw[hdr:]))[:_MAX_FRAME]
    return frame, max(14 + orig - hdr if orig >= hdr else len(frame), len(frame))


def run_python(prog_fd: int, data: mmap.mmap | bytes, packets: np.ndarray, ifindex: int = 1,
               counts: RunCounts | None = None) -> RunCounts:  # fmt: skip
    """Pure-Python runner (no C helper): one ctypes call per packet."""
    from mermin.datapath import libbpf

    counts = counts or RunCounts()
    view = memoryview(data)
    ctx = libbpf.SkBuff()
    ctx.ifindex = ifindex
    for pkt in packets:
        if int(pkt["flags"]):
            counts.damaged += 1
            continue
        framed = _frame(view, pkt, counts)
        if framed is None:
            continue
        frame, wire = framed
        ctx.tstamp = int(pkt["ts_ns"])
        ctx.wire_len = min(wire, 65535)
        try:
            libbpf.prog_test_run(prog_fd, frame, ctx=bytes(ctx))
        except DatapathError as exc:
            if "Invalid argument" in str(exc) or "EINVAL" in str(exc):
                counts.rejected += 1
                continue
            raise
        counts.ok += 1
    return counts
