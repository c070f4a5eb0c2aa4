"""Capture files for `mermin replay`: validate the header, index every packet.

A capture is mapped into memory once; `Capture.packets` is a numpy array of `PKT_DTYPE` (offset,
timestamp in ns, lengths, link type, damage flags) built by the C indexer (`fastrun`) or, when
the helper is not built, by dpkt. Packet bytes are never copied into Python objects on the fast
path.

Supported link types (others are rejected for pcap, counted per packet for pcapng):
Ethernet (1), Linux cooked SLL (113) and SLL2 (276), raw IP (101; 12 and 14 where they mean raw
IP; 228 IPv4, 229 IPv6).
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mermin.errors import CaptureError

__all__ = ["F_BAD_IFACE", "F_TRUNCATED", "LINKTYPES", "PKT_DTYPE", "Capture", "open_capture"]

LINKTYPES: dict[int, str] = {
    1: "ethernet", 113: "linux_sll", 276: "linux_sll2", 101: "raw", 12: "raw", 14: "raw",
    228: "ipv4", 229: "ipv6",
}  # fmt: skip

PKT_DTYPE = np.dtype(
    [("offset", "<u8"), ("ts_ns", "<u8"), ("caplen", "<u4"), ("origlen", "<u4"),
     ("linktype", "<u4"), ("flags", "<u4")]
)  # fmt: skip  # struct mr_pkt in _fastrun.c
F_TRUNCATED = 1
F_BAD_IFACE = 2

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True),
}  # fmt: skip
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


@dataclass
class Capture:
    """An indexed capture. `data` is the whole file (mmap); `packets` index into it."""

    path: Path
    format: str  # "pcap" | "pcapng"
    data: mmap.mmap | bytes
    packets: np.ndarray  # PKT_DTYPE
    linktypes: tuple[int, ...]  # link types declared by the file
    swapped: bool = False
    nsec: bool = False
    indexer: str = "c"

    def close(self) -> None:
        if isinstance(self.data, mmap.mmap):
            # a numpy view may still be alive; the mapping then goes with it
            with contextlib.suppress(BufferError):
                self.data.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _header(path: Path, data: bytes | mmap.mmap) -> tuple[str, bool, bool, tuple[int, ...]]:
    """(format, swapped, nsec, linktypes) from the file header, or CaptureError."""
    if len(data) < 4:
        raise CaptureError(f"{path}: not a capture file: {len(data)} bytes, too short for a "
                           "pcap or pcapng header")
    magic = bytes(data[:4])
    if magic in _PCAP_MAGICS:
        order, nsec = _PCAP_MAGICS[magic]
        if len(data) < 24:
            raise CaptureError(f"{path}: truncated pcap header ({len(data)} of 24 bytes)")
        linktype = struct.unpack(order + "I", data[20:24])[0] & 0xFFFF
        if linktype not in LINKTYPES:
            raise CaptureError(
                f"{path}: unsupported link type {linktype}; replay reads Ethernet (1), Linux "
                "cooked (113, 276) and raw IP (101, 228, 229) captures"
            )
        return "pcap", order == ">", nsec, (linktype,)
    if magic == _PCAPNG_MAGIC:
        if len(data) < 28:
            raise CaptureError(f"{path}: truncated pcapng section header ({len(data)} bytes)")
        bom = bytes(data[8:12])
        if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
            raise CaptureError(f"{path}: damaged pcapng section header (bad byte-order magic)")
        linktypes = _pcapng_linktypes(data, "<" if bom == b"\x4d\x3c\x2b\x1a" else ">")
        if not any(lt in LINKTYPES for lt in linktypes):
            found = ", ".join(str(lt) for lt in linktypes) or "none"
            raise CaptureError(
                f"{path}: no interface with a supported link type (found: {found}); replay "
                "reads Ethernet (1), Linux cooked (113, 276) and raw IP (101, 228, 229)"
            )
        return "pcapng", False, False, linktypes
    raise CaptureError(
        f"{path}: not a pcap or pcapng capture (starts with {magic.hex()}); convert it with "
        "`editcap -F pcap IN OUT`"
    )


def _pcapng_linktypes(data: bytes | mmap.mmap, order: str) -> tuple[int, ...]:
    """Link types of the interface blocks before the first packet (block headers only)."""
    out: list[int] = []
    pos, size = 0, len(data)
    while pos + 12 <= size:
        if bytes(data[pos : pos + 4]) == _PCAPNG_MAGIC and pos + 12 <= size:
            bom = bytes(data[pos + 8 : pos + 12])
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack(order + "II", data[pos : pos + 8])
        if blen < 12 or blen % 4 or pos + blen > size:
            break
        if btype == 1 and blen >= 20:
            out.append(struct.unpack(order + "H", data[pos + 8 : pos + 10])[0])
        elif btype in (2, 3, 6) and out:
            break  # packets started: later interfaces are checked per packet by the indexer
        pos += blen
    return tuple(out)


def open_capture(path: str | Path, *, use_c: bool | None = None) -> Capture:
    """Open, validate and index a capture. Raises CaptureError with one clear line."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {exc.strerror}") from exc
    with fh:
        size = path.stat().st_size
        data: mmap.mmap | bytes = (
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        )
    fmt, swapped, nsec, linktypes = _header(path, data)
    from mermin.replay import fastrun

    if use_c is None:
        use_c = fastrun.available()
    if use_c:
        packets = fastrun.index(data, fmt, swapped, nsec, linktypes[0] if fmt == "pcap" else 0)
        indexer = "c"
    else:
        if isinstance(data, mmap.mmap):
            data.close()
        packets, data = _index_dpkt(path, fmt)
        indexer = "dpkt"
    return Capture(path, fmt, data, packets, linktypes, swapped, nsec, indexer)


def _index_dpkt(path: Path, fmt: str) -> tuple[np.ndarray, bytes]:
    """Fallback indexer (no C helper): dpkt reads, packets are copied into one buffer."""
    import dpkt

    chunks: list[bytes] = []
    rows: list[tuple[int, int, int, int, int, int]] = []
    offset = 0
    with path.open("rb") as fh:
        try:
            reader = dpkt.pcap.Reader(fh) if fmt == "pcap" else dpkt.pcapng.Reader(fh)
        except (ValueError, dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError) as exc:
            raise CaptureError(f"{path}: cannot read capture header: {exc}") from exc
        linktype = reader.datalink()
        # dpkt yields float seconds (Decimal for ns pcap): undo that at the file's resolution
        divisor = getattr(reader, "_divisor", 1e6)
        if isinstance(divisor, float) and divisor <= 1e9:
            units, scale = divisor, round(1e9 / divisor)
        else:
            units, scale = 1e9, 1
        try:
            for ts, buf in reader:
                # a Decimal (ns pcap) converts exactly
                exact = not isinstance(ts, float)
                ts_ns = int(ts * 1_000_000_000) if exact else round(ts * units) * scale
                rows.append((offset, ts_ns, len(buf), len(buf), linktype, 0))
                chunks.append(buf)
                offset += len(buf)
        except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError, struct.error, ValueError):
            rows.append((offset, 0, 0, 0, 0, F_TRUNCATED))
    return np.array(rows, dtype=PKT_DTYPE), b"".join(chunks)
