"""Loading the Mermin BPF object: config into .rodata, map sizes, pinning, counters.

    with Datapath.load(settings=DatapathSettings(flows_capacity=65536)) as dp:
        fd = dp.program_fd("mermin_ingress")   # hand to the Attacher
        keys, values = dp.flows.read_all()
        dp.counters()                          # {"seen": ..., "counted": ..., ...}

Pinned state (`pin=True`, the default for the agent) lives under
`/sys/fs/bpf/mermin_v<ABI_VERSION>/`: FLOWS and COUNTERS are pinned there, so a restarted
agent reuses them (libbpf reuses a compatible pin at `bpf_object__load`). A pin whose type or
sizes no longer match (another capacity, another layout) is replaced, with a warning. Replay
and tests use `pin=False` or their own `pin_root`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mermin.errors import DatapathError, PermissionDeniedError

from . import libbpf
from .abi import ABI_VERSION, CONFIG_DTYPE, COUNTER_MAX, Counter
from .flowmap import FlowMap

__all__ = [
    "DEFAULT_PIN_ROOT",
    "PINNED_MAPS",
    "PROGRAMS",
    "Datapath",
    "DatapathSettings",
    "find_object_path",
    "remove_pins",
]

log = logging.getLogger("mermin.datapath")

DEFAULT_PIN_ROOT = Path(f"/sys/fs/bpf/mermin_v{ABI_VERSION}")
PROGRAMS = ("mermin_ingress", "mermin_egress")
PINNED_MAPS = ("FLOWS", "COUNTERS")  # FRAGS is short-lived state: not worth keeping
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
_REPO = Path(__file__).resolve().parents[3]
SYSTEM_OBJECT = Path("/usr/lib/mermin/mermin.bpf.o")


def find_object_path() -> Path:
    """$MERMIN_BPF_OBJECT, else <repo>/build/mermin.bpf.o, else /usr/lib/mermin/mermin.bpf.o."""
    env = os.environ.get("MERMIN_BPF_OBJECT")
    if env:
        return Path(env)
    candidates = [_REPO / "build" / "mermin.bpf.o", SYSTEM_OBJECT]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DatapathError(
        f"no BPF object found (tried {tried}): run `make bpf` or set MERMIN_BPF_OBJECT"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DatapathSettings:
    """What the loader writes into the object before it is loaded."""

    flows_capacity: int = 16384  # FLOWS max_entries (pipeline.flow_capture.flow_stats_capacity)
    frags_capacity: int | None = None  # FRAGS max_entries; None keeps the object's default
    vxlan_port: int = 4789
    geneve_port: int = 6081
    wireguard_port: int = 51820
    replay: bool = False  # clock = skb->tstamp (BPF_PROG_TEST_RUN replays)
    pin: bool = True
    pin_root: Path = field(default=DEFAULT_PIN_ROOT)
    mount_bpffs: bool = True  # mount a BPF filesystem on pin_root's parent when none is there

    def config_bytes(self) -> bytes:
        """`struct mermin_config` as the kernel reads it."""
        cfg = np.zeros(1, CONFIG_DTYPE)
        cfg["vxlan_port"] = self.vxlan_port
        cfg["geneve_port"] = self.geneve_port
        cfg["wireguard_port"] = self.wireguard_port
        cfg["replay"] = int(self.replay)
        return cfg.tobytes()


class Datapath:
    """The loaded object: programs, FLOWS as a `FlowMap`, kernel counters."""

    def __init__(self, obj: libbpf.BpfObject, settings: DatapathSettings) -> None:
        self._obj = obj
        self.settings = settings
        self.object_path = obj.path
        flows = obj.map("FLOWS")
        self.flows = FlowMap(flows.fd, flows.max_entries)
        self._counters_fd = obj.map_fd("COUNTERS")
        self._ncpu = libbpf.num_possible_cpus()
        self._counter_keys = np.arange(COUNTER_MAX, dtype=np.uint32)
        self._counter_vals = np.zeros((COUNTER_MAX, self._ncpu), np.uint64)
        self._token = np.zeros(2, np.uint64)
        self._counters_lock = threading.Lock()  # metrics scrapes and the poll loop both read

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        object_path: str | os.PathLike[str] | None = None,
        settings: DatapathSettings | None = None,
    ) -> Datapath:
        """Open, configure and load the object (also a context manager: `with Datapath.load()`)."""
        settings = settings or DatapathSettings()
        path = Path(object_path) if object_path is not None else find_object_path()
        _check_kernel()
        obj = libbpf.BpfObject.open(path)
        try:
            obj.set_rodata_var("cfg", settings.config_bytes())
            obj.map("FLOWS").set_max_entries(settings.flows_capacity)
            if settings.frags_capacity:
                obj.map("FRAGS").set_max_entries(settings.frags_capacity)
            if settings.pin:
                _prepare_pins(obj, settings.pin_root, settings.mount_bpffs)
            obj.load()
            return cls(obj, settings)
        except BaseException:
            obj.close()
            raise

    def close(self) -> None:
        """Close our fds. Pinned maps stay (see `unpin`); attached links keep programs alive."""
        self._obj.close()

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unpin(self) -> None:
        """Remove this datapath's pinned maps (and the pin directory if it is then empty)."""
        remove_pins(self.settings.pin_root)

    # -- accessors ----------------------------------------------------------------------------
    @property
    def object(self) -> libbpf.BpfObject:
        return self._obj

    @property
    def pin_root(self) -> Path:
        return self.settings.pin_root

    def program_fd(self, name: str) -> int:
        """fd of a loaded program ("mermin_ingress" or "mermin_egress")."""
        return self._obj.program_fd(name)

    def map_fd(self, name: str) -> int:
        return self._obj.map_fd(name)

    def counters(self) -> dict[str, int]:
        """Kernel counters summed over CPUs, keyed by lower-case `abi.Counter` names."""
        with self._counters_lock:
            return self._read_counters()

    def _read_counters(self) -> dict[str, int]:
        n, _ = libbpf.map_lookup_batch(
            self._counters_fd, None, self._token, self._counter_keys, self._counter_vals,
            COUNTER_MAX,
        )  # fmt: skip
        sums = self._counter_vals[:n].sum(axis=1)
        out = {c.name.lower(): 0 for c in Counter}
        for key, total in zip(self._counter_keys[:n], sums, strict=True):
            out[Counter(int(key)).name.lower()] = int(total)
        return out


def _check_kernel() -> None:
    if not VMLINUX_BTF.exists():
        raise DatapathError(
            f"the kernel exposes no BTF ({VMLINUX_BTF} is missing): Mermin needs a kernel built "
            "with CONFIG_DEBUG_INFO_BTF=y (standard on current distributions)"
        )


def _bpffs_mounted(path: Path) -> bool:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return True  # cannot tell; let mkdir/pin report the problem
    best, kind, target = "", "", str(path)
    for line in mounts:  # the longest mount point containing `path` decides
        parts = line.split()
        if len(parts) < 3 or len(parts[1]) < len(best):
            continue
        if target == parts[1] or target.startswith(parts[1].rstrip("/") + "/"):
            best, kind = parts[1], parts[2]
    return kind == "bpf"


def _mount_bpffs(where: Path) -> None:
    """Mount a BPF filesystem at `where`, as `mount -t bpf bpf WHERE` (what Cilium does too)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    where.mkdir(parents=True, exist_ok=True)
    if libc.mount(b"bpf", os.fsencode(where), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EACCES):
            raise PermissionDeniedError(
                f"cannot mount a BPF filesystem on {where}: permission denied; run as root "
                "(CAP_SYS_ADMIN) or mount it beforehand (hostPath /sys/fs/bpf in Kubernetes)"
            )
        raise DatapathError(f"cannot mount a BPF filesystem on {where}: {os.strerror(err)}")
    log.info("mounted a BPF filesystem on %s", where)


def _prepare_pins(obj: libbpf.BpfObject, root: Path, mount_bpffs: bool) -> None:
    """Create the pin directory and point each pinned map at it; drop incompatible pins."""
    if not _bpffs_mounted(root):
        if not mount_bpffs:
            raise DatapathError(
                f"{root} is not on a BPF filesystem: mount one with `mount -t bpf bpf "
                f"{root.parent}` (in Kubernetes: a hostPath volume for /sys/fs/bpf)"
            )
        _mount_bpffs(root.parent)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise PermissionDeniedError(
            f"cannot create {root}: permission denied; run as root (CAP_SYS_ADMIN for bpffs)"
        ) from exc
    for name in PINNED_MAPS:
        bpf_map = obj.map(name)
        pin = root / name
        if pin.exists() and not _pin_compatible(pin, bpf_map):
            log.warning(
                "pinned map %s does not match the program (type, sizes or capacity changed); "
                "replacing it: entries counted by the previous agent are dropped",
                pin,
            )
            pin.unlink()
        bpf_map.set_pin_path(pin)


def _pin_compatible(pin: Path, bpf_map: libbpf.BpfMap) -> bool:
    try:
        fd = libbpf.obj_get(pin)
    except (FileNotFoundError, DatapathError):
        return False
    try:
        info = libbpf.map_info(fd)
    finally:
        libbpf.close_fd(fd)
    return (info.type, info.key_size, info.value_size, info.max_entries) == (
        bpf_map.type, bpf_map.key_size, bpf_map.value_size, bpf_map.max_entries,
    )  # fmt: skip


def remove_pins(root: Path) -> None:
    """Unlink the pinned maps under `root` and remove it if nothing else is left there."""
    for name in PINNED_MAPS:
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
    try:
        root.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.ENOENT, errno.EEXIST):
            raise
