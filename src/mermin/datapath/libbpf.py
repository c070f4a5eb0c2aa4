"""A thin ctypes binding of the system libbpf (libbpf.so.1, 1.1 or newer).

Only what Mermin needs: open/configure/load an object, map and program handles, map
operations (single and batched), BPF_PROG_TEST_RUN, pinning, links. Every failing call is
translated at this boundary into the `mermin.errors` tree: EPERM/EACCES without a verifier log
becomes `PermissionDeniedError` naming the capabilities, a rejected program becomes
`VerifierError` carrying the tail of the verifier log, anything else `DatapathError` with the
operation, the object and the errno text.

libbpf 1.x returns `-errno` from int functions and NULL + errno from pointer functions.

Quick use (golden tests, replay):

    with BpfObject.open("build/mermin.bpf.o") as obj:
        obj.set_rodata_var("cfg", config_bytes)
        obj.load()
        retval, ns = prog_test_run(obj.program_fd("mermin_ingress"), frame, ctx=skb_ctx(ifindex=1))
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import platform
import re
import resource
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mermin.errors import DatapathError, PermissionDeniedError, VerifierError

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_F_AFTER",
    "BPF_F_BEFORE",
    "BPF_NOEXIST",
    "BPF_TCX_EGRESS",
    "BPF_TCX_INGRESS",
    "BatchTooSmallError",
    "BpfMap",
    "BpfObject",
    "BpfProgram",
    "LinkInfo",
    "MapInfo",
    "ProgInfo",
    "SkBuff",
    "check",
    "close_fd",
    "link_create",
    "link_detach",
    "link_get_fd_by_id",
    "link_info",
    "link_update",
    "map_delete",
    "map_delete_batch",
    "map_info",
    "map_lookup",
    "map_lookup_and_delete",
    "map_lookup_batch",
    "map_update",
    "map_update_batch",
    "num_possible_cpus",
    "obj_get",
    "obj_pin",
    "prog_get_fd_by_id",
    "prog_info",
    "prog_test_run",
    "raise_memlock_rlimit",
    "recent_log",
    "skb_ctx",
]

log = logging.getLogger("mermin.datapath.libbpf")

# enum bpf_attach_type values this module uses (uapi/linux/bpf.h of 6.6+).
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
# Link-create / mprog flags.
BPF_F_BEFORE = 1 << 3
BPF_F_AFTER = 1 << 4
# Map update flags.
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

_CAPS_HINT = "run as root or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (CAP_SYS_ADMIN on < 5.8)"

c_void_p, c_char_p, c_int, c_uint32, c_size_t = (
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_uint32,
    ctypes.c_size_t,
)


# --------------------------------------------------------------------------------------------
# C structs
# --------------------------------------------------------------------------------------------
class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class _BatchOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _LinkCreateOpts(ctypes.Structure):
    # struct bpf_link_create_opts of libbpf 1.1 (its size is what libbpf checks).
    _fields_ = [
        ("sz", c_size_t),
        ("flags", c_uint32),
        ("iter_info", c_void_p),
        ("iter_info_len", c_uint32),
        ("target_btf_id", c_uint32),
        ("_union", ctypes.c_uint64 * 5),
    ]


class SkBuff(ctypes.Structure):
    """`struct __sk_buff`, the BPF_PROG_TEST_RUN context of a sched_cls program (192 bytes).

    For sched_cls the kernel accepts only mark, priority, ingress_ifindex, ifindex, cb, tstamp,
    wire_len, gso_segs, gso_size, tstamp_type and hwtstamp; every other field must be 0.
    `ifindex` (when > 1) must name an interface of the caller's network namespace.
    """

    _fields_ = [
        ("len", c_uint32),
        ("pkt_type", c_uint32),
        ("mark", c_uint32),
        ("queue_mapping", c_uint32),
        ("protocol", c_uint32),
        ("vlan_present", c_uint32),
        ("vlan_tci", c_uint32),
        ("vlan_proto", c_uint32),
        ("priority", c_uint32),
        ("ingress_ifindex", c_uint32),
        ("ifindex", c_uint32),
        ("tc_index", c_uint32),
        ("cb", c_uint32 * 5),
        ("hash", c_uint32),
        ("tc_classid", c_uint32),
        ("data", c_uint32),
        ("data_end", c_uint32),
        ("napi_id", c_uint32),
        ("family", c_uint32),
        ("remote_ip4", c_uint32),
        ("local_ip4", c_uint32),
        ("remote_ip6", c_uint32 * 4),
        ("local_ip6", c_uint32 * 4),
        ("remote_port", c_uint32),
        ("local_port", c_uint32),
        ("data_meta", c_uint32),
        ("flow_keys", ctypes.c_uint64),
        ("tstamp", ctypes.c_uint64),
        ("wire_len", c_uint32),
        ("gso_segs", c_uint32),
        ("sk", ctypes.c_uint64),
        ("gso_size", c_uint32),
        ("tstamp_type", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
        ("hwtstamp", ctypes.c_uint64),
    ]


def skb_ctx(**fields: int) -> bytes:
    """A `struct __sk_buff` as bytes with the given fields set (e.g. ifindex=3, tstamp=...)."""
    skb = SkBuff()
    for name, value in fields.items():
        if not hasattr(skb, name) or name.startswith("_"):
            raise TypeError(f"struct __sk_buff has no field {name!r}")
        setattr(skb, name, value)
    return bytes(skb)


# --------------------------------------------------------------------------------------------
# The library and its log
# --------------------------------------------------------------------------------------------
_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)


class _LogSink:
    """Receives every libbpf message: keeps recent ones and feeds active captures."""

    def __init__(self) -> None:
        self.recent: collections.deque[str] = collections.deque(maxlen=4000)
        self.lock = threading.Lock()
        self.captures: dict[int, list[str]] = {}

    def emit(self, level: int, text: str) -> None:
        lines = text.splitlines()
        with self.lock:
            self.recent.extend(lines)
            capture = self.captures.get(threading.get_ident())
            if capture is not None:
                capture.extend(lines)
        # Failures reach the user as exceptions; the raw libbpf chatter is for debugging only.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("libbpf[%d]: %s", level, text.rstrip())

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[str]]:
        lines: list[str] = []
        ident = threading.get_ident()
        with self.lock:
            self.captures[ident] = lines
        try:
            yield lines
        finally:
            with self.lock:
                self.captures.pop(ident, None)


_sink = _LogSink()
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_libc.vsnprintf.restype = c_int
_libc.close.argtypes = [c_int]


# va_copy() of x86_64 and arm64 is a plain copy of the va_list struct (24 / 32 bytes).
_VA_LIST_SIZE = 24 if platform.machine() in ("x86_64", "AMD64") else 32


@_PRINT_FN
def _print_cb(level: int, fmt: bytes, args: int) -> int:
    # va_list is passed by reference on x86_64 and arm64, so it can be handed to vsnprintf;
    # a copy is kept first because a long message (a verifier log) needs a second pass.
    saved = ctypes.create_string_buffer(ctypes.string_at(args, _VA_LIST_SIZE), _VA_LIST_SIZE)
    buf = ctypes.create_string_buffer(4096)
    n = _libc.vsnprintf(buf, len(buf), fmt, args)
    if n >= len(buf):
        buf = ctypes.create_string_buffer(n + 1)
        n = _libc.vsnprintf(buf, len(buf), fmt, ctypes.addressof(saved))
    _sink.emit(level, buf.value.decode(errors="replace") if n >= 0 else "")
    return 0


# (restype, argtypes) of every libbpf function used; set once when the library is loaded.
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_set_print": (c_void_p, [_PRINT_FN]),
    "libbpf_num_possible_cpus": (c_int, []),
    "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__btf": (c_void_p, [c_void_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
    "bpf_program__autoload": (ctypes.c_bool, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_map__type": (c_int, [c_void_p]),
    "bpf_map__key_size": (c_uint32, [c_void_p]),
    "bpf_map__value_size": (c_uint32, [c_void_p]),
    "bpf_map__max_entries": (c_uint32, [c_void_p]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
    "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
    "bpf_map__set_initial_value": (c_int, [c_void_p, c_void_p, c_size_t]),
    "bpf_map__set_pin_path": (c_int, [c_void_p, c_char_p]),
    "bpf_map__pin_path": (c_char_p, [c_void_p]),
    "bpf_map__reuse_fd": (c_int, [c_void_p, c_int]),
    "bpf_map__is_internal": (ctypes.c_bool, [c_void_p]),
    "bpf_prog_test_run_opts": (c_int, [c_int, ctypes.POINTER(_TestRunOpts)]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_lookup_and_delete_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_lookup_batch": (
        c_int,
        [c_int, c_void_p, c_void_p, c_void_p, c_void_p, ctypes.POINTER(c_uint32), c_void_p],
    ),
    "bpf_map_delete_batch": (c_int, [c_int, c_void_p, ctypes.POINTER(c_uint32), c_void_p]),
    "bpf_map_update_batch": (
        c_int,
        [c_int, c_void_p, c_void_p, ctypes.POINTER(c_uint32), c_void_p],
    ),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_link_create": (c_int, [c_int, c_int, c_int, ctypes.POINTER(_LinkCreateOpts)]),
    "bpf_link_detach": (c_int, [c_int]),
    "bpf_link_update": (c_int, [c_int, c_int, c_void_p]),
    "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_link_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_map_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, ctypes.POINTER(c_uint32)]),
    "bpf_prog_get_next_id": (c_int, [c_uint32, ctypes.POINTER(c_uint32)]),
    "bpf_link_get_next_id": (c_int, [c_uint32, ctypes.POINTER(c_uint32)]),
    "btf__find_by_name_kind": (c_int, [c_void_p, c_char_p, c_uint32]),
    "btf__type_by_id": (c_void_p, [c_void_p, c_uint32]),
    "btf__name_by_offset": (c_char_p, [c_void_p, c_uint32]),
    "btf__resolve_size": (ctypes.c_longlong, [c_void_p, c_uint32]),
    "btf__parse": (c_void_p, [c_char_p, c_void_p]),
    "btf__free": (None, [c_void_p]),
}


def lib() -> ctypes.CDLL:
    """The loaded libbpf, configured on first use (print callback installed)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            _lib = _load_lib()
    return _lib


def _load_lib() -> ctypes.CDLL:
    name = "libbpf.so.1"
    try:
        handle = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        found = ctypes.util.find_library("bpf")
        raise DatapathError(
            f"cannot load {name} ({found or 'not found'}): install it (apt install libbpf1)"
        ) from exc
    for fn, (restype, argtypes) in _SIGNATURES.items():
        func = getattr(handle, fn)
        func.restype = restype
        func.argtypes = argtypes
    handle.libbpf_set_print(_print_cb)
    return handle


def recent_log(lines: int = 50) -> list[str]:
    """The last `lines` messages libbpf printed (all levels)."""
    with _sink.lock:
        return list(_sink.recent)[-lines:]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class BatchTooSmallError(DatapathError):
    """BPF_MAP_LOOKUP_BATCH: the count given cannot hold one hash bucket (ENOSPC)."""


def _error(op: str, err: int, what: str = "") -> DatapathError:
    """Translate an errno from `op` (on `what`) into our exception tree."""
    where = f" ({what})" if what else ""
    if err in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError(f"{op}{where}: permission denied; {_CAPS_HINT}")
    return DatapathError(f"{op}{where} failed: {os.strerror(err)} [errno {err}]")


def _check(ret: int, op: str, what: str = "") -> int:
    if ret < 0:
        raise _error(op, -ret, what)
    return ret


def check(ret: int, op: str, what: str = "") -> int:
    """`ret` if >= 0, else the translated error of `-ret` raised (for direct `lib()` calls)."""
    return _check(ret, op, what)


def _check_ptr(ptr: int | None, op: str, what: str = "") -> int:
    if not ptr:
        raise _error(op, ctypes.get_errno() or errno.EINVAL, what)
    return ptr


def _addr(buf: Any) -> int | None:
    """Address of a buffer (numpy array, bytes, bytearray, ctypes object) or None."""
    if buf is None:
        return None
    if isinstance(buf, int):
        return buf
    if hasattr(buf, "ctypes") and hasattr(buf, "dtype"):  # numpy
        if not buf.flags.c_contiguous:
            raise ValueError("buffer must be C-contiguous")
        return buf.ctypes.data
    if isinstance(buf, bytes):
        return ctypes.cast(ctypes.c_char_p(buf), c_void_p).value
    if isinstance(buf, ctypes.Array | ctypes.Structure):
        return ctypes.addressof(buf)
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def close_fd(fd: int) -> None:
    """Close a file descriptor, ignoring errors (already closed)."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def num_possible_cpus() -> int:
    """Number of possible CPUs (the stride of per-CPU map values)."""
    return _check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def raise_memlock_rlimit() -> None:
    """Lift RLIMIT_MEMLOCK (kernels before 5.11 charge BPF memory to it); best effort."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,) * 2)


# --------------------------------------------------------------------------------------------
# Objects, programs, maps
# --------------------------------------------------------------------------------------------
class BpfProgram:
    """A program of an open `BpfObject` (valid while the object is open)."""

    def __init__(self, obj: BpfObject, ptr: int) -> None:
        self._obj, self._ptr = obj, ptr

    @property
    def name(self) -> str:
        return lib().bpf_program__name(self._ptr).decode()

    @property
    def fd(self) -> int:
        """File descriptor (after load)."""
        return _check(lib().bpf_program__fd(self._ptr), "bpf_program__fd", self.name)

    def set_autoload(self, autoload: bool) -> None:
        """Whether `load()` loads this program (before load only)."""
        _check(lib().bpf_program__set_autoload(self._ptr, autoload), "set_autoload", self.name)


class BpfMap:
    """A map of an open `BpfObject`: configure before load, use its fd after."""

    def __init__(self, obj: BpfObject, ptr: int) -> None:
        self._obj, self._ptr = obj, ptr

    @property
    def name(self) -> str:
        return lib().bpf_map__name(self._ptr).decode()

    @property
    def fd(self) -> int:
        return _check(lib().bpf_map__fd(self._ptr), "bpf_map__fd", self.name)

    @property
    def type(self) -> int:
        return lib().bpf_map__type(self._ptr)

    @property
    def key_size(self) -> int:
        return lib().bpf_map__key_size(self._ptr)

    @property
    def value_size(self) -> int:
        return lib().bpf_map__value_size(self._ptr)

    @property
    def max_entries(self) -> int:
        return lib().bpf_map__max_entries(self._ptr)

    def set_max_entries(self, n: int) -> None:
        _check(lib().bpf_map__set_max_entries(self._ptr, n), "set_max_entries", self.name)

    @property
    def initial_value(self) -> bytes:
        """Initial contents of a global-data map (.rodata, .data, .bss)."""
        size = c_size_t(0)
        ptr = lib().bpf_map__initial_value(self._ptr, ctypes.byref(size))
        if not ptr:
            raise DatapathError(f"map {self.name} has no initial value (not a global-data map)")
        return ctypes.string_at(ptr, size.value)

    def set_initial_value(self, data: bytes) -> None:
        """Replace the initial contents (before load); `data` must be the map's full size."""
        ret = lib().bpf_map__set_initial_value(self._ptr, data, len(data))
        _check(ret, "set_initial_value", f"{self.name}, {len(data)} bytes")

    @property
    def pin_path(self) -> str | None:
        path = lib().bpf_map__pin_path(self._ptr)
        return path.decode() if path else None

    def set_pin_path(self, path: str | os.PathLike[str] | None) -> None:
        """Pin at load (or reuse an existing compatible pin there)."""
        raw = os.fsencode(path) if path is not None else None
        _check(lib().bpf_map__set_pin_path(self._ptr, raw), "set_pin_path", self.name)

    def reuse_fd(self, fd: int) -> None:
        _check(lib().bpf_map__reuse_fd(self._ptr, fd), "reuse_fd", self.name)

    @property
    def is_internal(self) -> bool:
        return bool(lib().bpf_map__is_internal(self._ptr))


class BpfObject:
    """An ELF BPF object: `open()`, configure, `load()`, then use program and map fds.

    Closing the object closes its fds: unpinned maps and programs without links go away.
    """

    def __init__(self, ptr: int, path: Path) -> None:
        self._ptr: int | None = ptr
        self.path = path
        self.loaded = False

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BpfObject:
        """Open (parse, not load) the object at `path`; clear errors for missing/garbage files."""
        path = Path(path)
        try:
            with path.open("rb"):
                pass
        except FileNotFoundError:
            raise DatapathError(
                f"BPF object {path} not found: build it with `make bpf` or set MERMIN_BPF_OBJECT"
            ) from None
        except OSError as exc:
            raise DatapathError(f"cannot read BPF object {path}: {exc.strerror}") from exc
        with _sink.capture() as lines:
            ptr = lib().bpf_object__open_file(os.fsencode(path), None)
        if not ptr:
            err = ctypes.get_errno() or errno.EINVAL
            detail = _last_meaningful(lines) or os.strerror(err)
            raise DatapathError(f"cannot open BPF object {path}: {detail}")
        return cls(ptr, path)

    def close(self) -> None:
        if self._ptr:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise DatapathError(f"BPF object {self.path} is closed")
        return self._ptr

    def load(self) -> None:
        """Load every map and autoloaded program; verifier rejection -> VerifierError."""
        raise_memlock_rlimit()
        with _sink.capture() as lines:
            ret = lib().bpf_object__load(self.ptr)
        if ret < 0:
            raise _load_error(self.path, -ret, lines)
        self.loaded = True

    # -- lookups ------------------------------------------------------------------------------
    def program(self, name: str) -> BpfProgram:
        ptr = lib().bpf_object__find_program_by_name(self.ptr, name.encode())
        if not ptr:
            raise DatapathError(f"BPF object {self.path} has no program {name!r}")
        return BpfProgram(self, ptr)

    def programs(self) -> list[BpfProgram]:
        out, ptr = [], lib().bpf_object__next_program(self.ptr, None)
        while ptr:
            out.append(BpfProgram(self, ptr))
            ptr = lib().bpf_object__next_program(self.ptr, ptr)
        return out

    def map(self, name: str) -> BpfMap:
        """A map by name; global-data maps by section name (".rodata", ".bss", ...)."""
        ptr = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not ptr and name.startswith("."):
            ptr = next((m._ptr for m in self.maps() if m.name.endswith(name)), None)
        if not ptr:
            raise DatapathError(f"BPF object {self.path} has no map {name!r}")
        return BpfMap(self, ptr)

    def maps(self) -> list[BpfMap]:
        out, ptr = [], lib().bpf_object__next_map(self.ptr, None)
        while ptr:
            out.append(BpfMap(self, ptr))
            ptr = lib().bpf_object__next_map(self.ptr, ptr)
        return out

    def program_fd(self, name: str) -> int:
        return self.program(name).fd

    def map_fd(self, name: str) -> int:
        return self.map(name).fd

    # -- .rodata ------------------------------------------------------------------------------
    @property
    def rodata(self) -> bytes:
        return self.map(".rodata").initial_value

    def set_rodata(self, data: bytes) -> None:
        """Replace the whole .rodata section (before load)."""
        self.map(".rodata").set_initial_value(data)

    def set_rodata_var(self, var: str, data: bytes) -> None:
        """Overwrite global `var` in .rodata with `data` (its exact size), found through BTF."""
        from mermin.datapath.btf import datasec_vars  # local: btf imports this module

        rodata = self.map(".rodata")
        layout = datasec_vars(lib().bpf_object__btf(self.ptr), ".rodata")
        if var not in layout:
            raise DatapathError(f"BPF object {self.path} has no .rodata variable {var!r}")
        offset, size = layout[var]
        if len(data) != size:
            raise DatapathError(f".rodata variable {var} is {size} bytes, got {len(data)}")
        current = bytearray(rodata.initial_value)
        current[offset : offset + size] = data
        rodata.set_initial_value(bytes(current))


def _last_meaningful(lines: list[str]) -> str:
    for line in reversed(lines):
        text = line.strip().removeprefix("libbpf:").strip()
        if text:
            return text
    return ""


_PROG_FAIL = re.compile(r"prog '([^']+)': (?:BPF program )?(?:load failed|failed to load)")


def _verifier_log(lines: list[str]) -> tuple[str | None, list[str]]:
    """(program name, verifier log lines) from libbpf's messages of a failed load."""
    prog, body, inside = None, [], False
    for line in lines:
        if "-- BEGIN PROG LOAD LOG --" in line:
            inside, body = True, []
            match = re.search(r"prog '([^']+)'", line)
            prog = match.group(1) if match else prog
            continue
        if "-- END PROG LOAD LOG --" in line:
            inside = False
            continue
        if inside:
            body.append(line)
        elif prog is None and (match := _PROG_FAIL.search(line)):
            prog = match.group(1)
    return prog, body


def _load_error(path: Path, err: int, lines: list[str]) -> DatapathError:
    prog, body = _verifier_log(lines)
    if body:
        tail = [x for x in body if x.strip()][-20:]
        last = next((x for x in reversed(tail) if not x.startswith("processed ")), tail[-1])
        return VerifierError(
            f"BPF verifier rejected program {prog or '?'} of {path}: {last.strip()}",
            log_tail="\n".join(tail),
        )
    if err in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError(f"loading BPF object {path}: permission denied; {_CAPS_HINT}")
    detail = _last_meaningful(lines)
    return DatapathError(
        f"loading BPF object {path} failed: {os.strerror(err)}" + (f" ({detail})" if detail else "")
    )


# --------------------------------------------------------------------------------------------
# Test run
# --------------------------------------------------------------------------------------------
def prog_test_run(
    prog_fd: int, data: bytes, ctx: bytes | None = None, repeat: int = 1
) -> tuple[int, int]:
    """Run a loaded program on one packet with BPF_PROG_TEST_RUN: `(retval, duration_ns)`.

    `ctx` is a `struct __sk_buff` (see `skb_ctx`) for sched_cls programs; `duration_ns` is
    the kernel's average per repetition.
    """
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
    opts.data_in, opts.data_size_in = _addr(data), len(data)
    opts.repeat = repeat
    if ctx is not None:
        opts.ctx_in, opts.ctx_size_in = _addr(ctx), len(ctx)
    _check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return opts.retval, opts.duration


# --------------------------------------------------------------------------------------------
# Map operations (buffers: numpy arrays, bytes, bytearray or ctypes objects)
# --------------------------------------------------------------------------------------------
def map_lookup(fd: int, key: Any, value: Any) -> bool:
    """Look up `key` into `value`; False when absent."""
    ret = lib().bpf_map_lookup_elem(fd, _addr(key), _addr(value))
    if ret == -errno.ENOENT:
        return False
    _check(ret, "map lookup")
    return True


def map_update(fd: int, key: Any, value: Any, flags: int = BPF_ANY) -> None:
    _check(lib().bpf_map_update_elem(fd, _addr(key), _addr(value), flags), "map update")


def map_delete(fd: int, key: Any) -> bool:
    """Delete `key`; False when it was absent."""
    ret = lib().bpf_map_delete_elem(fd, _addr(key))
    if ret == -errno.ENOENT:
        return False
    _check(ret, "map delete")
    return True


def map_lookup_and_delete(fd: int, key: Any, value: Any) -> bool:
    """Atomically read `key` into `value` and delete it; False when absent."""
    ret = lib().bpf_map_lookup_and_delete_elem(fd, _addr(key), _addr(value))
    if ret == -errno.ENOENT:
        return False
    _check(ret, "map lookup-and-delete")
    return True


def map_lookup_batch(
    fd: int, in_batch: Any, out_batch: Any, keys: Any, values: Any, count: int
) -> tuple[int, bool]:
    """One BPF_MAP_LOOKUP_BATCH: `(entries copied, end reached)`.

    `in_batch` None starts from the beginning; `out_batch` receives the resume token (at least
    key-size, >= 8 bytes). Raises `DatapathError` with errno ENOSPC when `count` is smaller
    than one hash bucket (the caller retries with a larger count).
    """
    n = c_uint32(count)
    opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
    ret = lib().bpf_map_lookup_batch(
        fd, _addr(in_batch), _addr(out_batch), _addr(keys), _addr(values), ctypes.byref(n),
        ctypes.byref(opts),
    )  # fmt: skip
    if ret == -errno.ENOENT:
        return n.value, True
    if ret == -errno.ENOSPC and n.value == 0:
        raise BatchTooSmallError(f"map lookup batch: {count} entries is less than one bucket")
    _check(ret, "map lookup batch")
    return n.value, False


def map_update_batch(fd: int, keys: Any, values: Any, count: int, flags: int = BPF_ANY) -> int:
    """BPF_MAP_UPDATE_BATCH: insert/replace `count` entries; returns how many were written."""
    n = c_uint32(count)
    opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts), elem_flags=flags)
    ret = lib().bpf_map_update_batch(
        fd, _addr(keys), _addr(values), ctypes.byref(n), ctypes.byref(opts)
    )
    _check(ret, "map update batch", f"{n.value} of {count} written")
    return n.value


def map_delete_batch(fd: int, keys: Any, count: int) -> int:
    """BPF_MAP_DELETE_BATCH: delete up to `count` keys; returns how many were processed.

    The kernel stops at the first key it cannot delete (absent): the caller resumes after it.
    """
    n = c_uint32(count)
    opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
    ret = lib().bpf_map_delete_batch(fd, _addr(keys), ctypes.byref(n), ctypes.byref(opts))
    if ret < 0 and ret != -errno.ENOENT:
        raise _error("map delete batch", -ret)
    return n.value


# --------------------------------------------------------------------------------------------
# Pinning, ids, links, info
# --------------------------------------------------------------------------------------------
def obj_pin(fd: int, path: str | os.PathLike[str]) -> None:
    _check(lib().bpf_obj_pin(fd, os.fsencode(path)), "pin", os.fspath(path))


def obj_get(path: str | os.PathLike[str]) -> int:
    """fd of the object pinned at `path` (FileNotFoundError when nothing is pinned there)."""
    fd = lib().bpf_obj_get(os.fsencode(path))
    if fd == -errno.ENOENT:
        raise FileNotFoundError(errno.ENOENT, "no pinned BPF object", os.fspath(path))
    return _check(fd, "open pinned object", os.fspath(path))


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> int:
    """bpf_link_create; for TCX `target` is the ifindex. Returns the link fd."""
    opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=flags)
    return _check(
        lib().bpf_link_create(prog_fd, target, attach_type, ctypes.byref(opts)),
        "link create",
        f"target {target}, attach type {attach_type}",
    )


def link_detach(link_fd: int) -> None:
    """Detach a link now, even if other references (pins, fds) keep the link object alive."""
    ret = lib().bpf_link_detach(link_fd)
    if ret not in (0, -errno.ENOLINK, -errno.ENOENT):
        _check(ret, "link detach")


def link_update(link_fd: int, new_prog_fd: int) -> None:
    """Atomically replace the program of a link."""
    _check(lib().bpf_link_update(link_fd, new_prog_fd, None), "link update")


def prog_get_fd_by_id(prog_id: int) -> int:
    return _check(lib().bpf_prog_get_fd_by_id(prog_id), "open program by id", str(prog_id))


def link_get_fd_by_id(link_id: int) -> int:
    return _check(lib().bpf_link_get_fd_by_id(link_id), "open link by id", str(link_id))


def _info(fd: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    n = c_uint32(size)
    _check(lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)), "get object info")
    return buf.raw


@dataclass(frozen=True, slots=True)
class ProgInfo:
    id: int
    type: int
    name: str


@dataclass(frozen=True, slots=True)
class MapInfo:
    id: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


@dataclass(frozen=True, slots=True)
class LinkInfo:
    id: int
    type: int
    prog_id: int
    ifindex: int  # tcx/netkit/xdp links
    attach_type: int  # tcx links


def _u32(buf: bytes, off: int) -> int:
    return int.from_bytes(buf[off : off + 4], sys.byteorder)


def _cstr(buf: bytes, off: int, size: int) -> str:
    return buf[off : off + size].split(b"\0", 1)[0].decode(errors="replace")


def prog_info(fd: int) -> ProgInfo:
    """struct bpf_prog_info: type @0, id @4, name[16] @64."""
    raw = _info(fd, 232)
    return ProgInfo(id=_u32(raw, 4), type=_u32(raw, 0), name=_cstr(raw, 64, 16))


def map_info(fd: int) -> MapInfo:
    """struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16]."""
    raw = _info(fd, 88)
    return MapInfo(
        type=_u32(raw, 0), id=_u32(raw, 4), key_size=_u32(raw, 8), value_size=_u32(raw, 12),
        max_entries=_u32(raw, 16), flags=_u32(raw, 20), name=_cstr(raw, 24, 16),
    )  # fmt: skip


def link_info(fd: int) -> LinkInfo:
    """struct bpf_link_info: type @0, id @4, prog_id @8, union @16 (tcx: ifindex, attach_type)."""
    raw = _info(fd, 48)
    return LinkInfo(
        type=_u32(raw, 0), id=_u32(raw, 4), prog_id=_u32(raw, 8),
        ifindex=_u32(raw, 16), attach_type=_u32(raw, 20),
    )  # fmt: skip
