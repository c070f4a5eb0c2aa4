"""`mermin diagnose`: can this node (or pod) run the agent? One PASS/FAIL/SKIP line per check.

Checks, in order: kernel version, kernel BTF, process capabilities, BPF filesystem, the BPF
object, the network namespace to instrument, which interfaces match the configured patterns,
a test load of the programs, TCX support, a test attach/detach on a veth pair created and
removed for the purpose, and the Kubernetes API (reachable, and listable with our RBAC).
Each failure comes with a fix hint. Exit status 1 if any check failed, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import platform
import re
import secrets
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mermin.config import Config
    from mermin.datapath.loader import Datapath

__all__ = [
    "CAP_NAMES",
    "MIN_KERNEL",
    "REQUIRED_CAPS",
    "TCX_KERNEL",
    "Result",
    "diagnose",
    "effective_caps",
    "format_results",
    "kernel_version",
    "run",
]

MIN_KERNEL = (5, 8)  # CAP_BPF, bpf_ktime_get_boot_ns, batched map ops
TCX_KERNEL = (6, 6)
BPFFS = Path("/sys/fs/bpf")
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
HOST_NETNS = "/proc/1/ns/net"

# capability number -> name (linux/capability.h), for CapEff and for capsh
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
REQUIRED_CAPS = ("BPF", "PERFMON", "NET_ADMIN")
"""What the agent needs on kernels >= 5.8 (the Helm chart grants exactly these)."""
_WHY = {
    "BPF": "load programs and create maps",
    "PERFMON": "the verifier allows the program's pointer arithmetic only with it",
    "NET_ADMIN": "load TC programs and attach them (TCX links, clsact qdiscs)",
}
_CHART_HINT = "Helm: securityContext.capabilities (default [BPF, PERFMON, NET_ADMIN])"


@dataclass(frozen=True, slots=True)
class Result:
    """Outcome of one check."""

    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def _pass(name: str, detail: str) -> Result:
    return Result(name, "PASS", detail)


def _fail(name: str, detail: str, hint: str) -> Result:
    return Result(name, "FAIL", detail, hint)


def _skip(name: str, detail: str) -> Result:
    return Result(name, "SKIP", detail)


# --- facts ---------------------------------------------------------------------------------------
def kernel_version(release: str | None = None) -> tuple[int, int, int]:
    """(major, minor, patch) of `uname -r` (or `release`)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release or platform.release())
    if not match:
        return (0, 0, 0)
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def effective_caps(status_text: str | None = None) -> set[str]:
    """Names of the effective capabilities of this process (CapEff in /proc/self/status)."""
    text = status_text if status_text is not None else Path("/proc/self/status").read_text()
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", text, re.M)
    mask = int(match.group(1), 16) if match else 0
    return {name for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1}


def missing_caps(caps: set[str], kernel: tuple[int, ...]) -> list[str]:
    """Capabilities still needed. CAP_SYS_ADMIN stands in for BPF and PERFMON (and is the
    only way on kernels older than 5.8)."""
    if kernel[:2] < MIN_KERNEL:
        return [] if "SYS_ADMIN" in caps else ["SYS_ADMIN", "NET_ADMIN"]
    need = [c for c in REQUIRED_CAPS if c not in caps]
    if "SYS_ADMIN" in caps:
        need = [c for c in need if c not in ("BPF", "PERFMON")]
    return need


def _missing_hint(missing: list[str]) -> str:
    parts = [f"CAP_{c} ({_WHY.get(c, 'needed')})" for c in missing]
    return f"grant {', '.join(parts)}; {_CHART_HINT}"


# --- checks --------------------------------------------------------------------------------------
def check_kernel(kernel: tuple[int, int, int]) -> Result:
    text = ".".join(map(str, kernel))
    if kernel[:2] < MIN_KERNEL:
        return _fail("kernel", f"{text} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]}",
                     "upgrade the node kernel to 5.8 or newer (6.6+ for TCX)")
    tcx = "TCX capable" if kernel[:2] >= TCX_KERNEL else "no TCX before 6.6: classic TC is used"
    return _pass("kernel", f"{text} ({tcx})")


def check_btf(path: Path = VMLINUX_BTF) -> Result:
    if path.exists():
        return _pass("btf", f"{path} present")
    return _fail("btf", f"{path} missing",
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (standard on current distros)")


def check_capabilities(caps: set[str], kernel: tuple[int, int, int]) -> Result:
    missing = missing_caps(caps, kernel)
    have = [c for c in (*REQUIRED_CAPS, "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE") if c in caps]
    if missing:
        return _fail("capabilities", "missing " + ", ".join(f"CAP_{c}" for c in missing),
                     _missing_hint(missing))
    return _pass("capabilities", "have " + ", ".join(f"CAP_{c}" for c in have))


def check_bpffs(path: Path = BPFFS) -> Result:
    try:
        mounted = _fs_type(path) == "bpf"
    except OSError as exc:
        return _fail("bpffs", f"cannot inspect {path}: {exc.strerror}", "mount /sys/fs/bpf")
    if not mounted:
        return _fail("bpffs", f"{path} is not a BPF filesystem",
                     "mount it: `mount -t bpf bpf /sys/fs/bpf` (Helm: bpffs.enabled=true mounts "
                     "the node's)")
    probe = path / f"mermin-diagnose-{secrets.token_hex(4)}"  # bpffs refuses dot names
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return _fail("bpffs", f"{path} is not writable: {exc.strerror}",
                     "mount it read-write (Helm: the bpffs hostPath must not be readOnly)")
    return _pass("bpffs", f"{path} mounted and writable")


def _fs_type(path: Path) -> str:
    best, kind = "", ""
    target = str(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and len(parts[1]) >= len(best) and (
                target == parts[1] or target.startswith(parts[1].rstrip("/") + "/")):
            best, kind = parts[1], parts[2]
    return kind


def check_object() -> tuple[Result, Path | None]:
    try:
        from mermin.datapath.loader import find_object_path

        path = find_object_path()
    except Exception as exc:
        return _fail("bpf object", str(exc), "run `make bpf` or set MERMIN_BPF_OBJECT"), None
    if not path.is_file():
        return _fail("bpf object", f"{path} missing", "set MERMIN_BPF_OBJECT to the object"), None
    return _pass("bpf object", str(path)), path


def check_netns(setting: str, caps: set[str]) -> tuple[Result, str | None]:
    """Resolve discovery.instrument.netns and check we can enter it."""
    from mermin.interfaces.hostns import enter_netns, same_netns

    path = None if setting == "current" else (HOST_NETNS if setting == "host" else setting)
    if path is None:
        return _pass("netns", "instrumenting the agent's own network namespace"), None
    try:
        if same_netns(path):
            where = "the node's (hostNetwork)" if setting == "host" else path
            return _pass("netns", f"already in {where} network namespace"), None
    except OSError as exc:
        hint = ("run with hostNetwork (no privilege needed), or with hostPID plus CAP_SYS_PTRACE "
                "and CAP_SYS_ADMIN; or set discovery \"instrument\" { netns = \"current\" }")
        if exc.errno == errno.ENOENT:
            hint = "check discovery \"instrument\" { netns }"
        return _fail("netns", f"cannot read {path}: {exc.strerror}", hint), None
    try:
        with enter_netns(path):
            pass
    except Exception as exc:
        need = [c for c in ("SYS_ADMIN",) if c not in caps]
        return _fail("netns", f"cannot enter {path}: {exc}",
                     "grant " + ", ".join(f"CAP_{c}" for c in need or ["SYS_ADMIN"])
                     + " (setns), or use hostNetwork"), None
    return _pass("netns", f"can enter {path}"), path


def check_interfaces(config: Config, netns_path: str | None) -> Result:
    from mermin.interfaces.hostns import enter_netns
    from mermin.interfaces.patterns import InterfaceMatcher

    instrument = config.discovery.instrument
    try:
        matcher = InterfaceMatcher.from_config(instrument)
        with enter_netns(netns_path):
            names = sorted(name for _, name in socket.if_nameindex())
    except Exception as exc:
        return _fail("interfaces", f"cannot list interfaces: {exc}", "check the netns check")
    hits = [n for n in names if matcher.matches(n)]
    if not hits:
        return _fail("interfaces", f"none of {len(names)} interfaces match "
                     f"{', '.join(matcher.include)}",
                     "set discovery \"instrument\" { interfaces = [...] } to your CNI's "
                     "interfaces (a node without pods yet may simply have none)")
    shown = ", ".join(hits[:8]) + (f" (+{len(hits) - 8} more)" if len(hits) > 8 else "")
    return _pass("interfaces", f"{len(hits)} of {len(names)} match: {shown}")


def check_load(object_path: Path | None, caps: set[str], kernel: tuple[int, int, int],
               pin_root: Path | None = None) -> tuple[Result, Datapath | None]:
    """Load (and verify) the programs with small maps; pin them under `pin_root` if given."""
    if object_path is None:
        return _skip("load", "no BPF object"), None
    from mermin.datapath.loader import Datapath, DatapathSettings

    settings = DatapathSettings(pin=pin_root is not None, flows_capacity=1024,
                                pin_root=pin_root or BPFFS / "unused", mount_bpffs=False)
    try:
        dp = Datapath.load(object_path, settings)
    except Exception as exc:
        missing = missing_caps(caps, kernel)
        hint = _missing_hint(missing) if missing else "see the error; docs/operations.md"
        detail = str(exc).splitlines()[0]
        if missing:
            detail = f"{detail} [missing {', '.join('CAP_' + c for c in missing)}]"
        return _fail("load", detail, hint), None
    pinned = f", maps pinned under {pin_root}" if pin_root else ""
    return _pass("load", f"mermin_ingress and mermin_egress loaded and verified{pinned}"), dp


def check_tcx(dp: Datapath | None, kernel: tuple[int, int, int]) -> Result:
    if dp is None:
        by_version = kernel[:2] >= TCX_KERNEL
        return _skip("tcx", f"not probed (program not loaded); kernel says "
                     f"{'yes' if by_version else 'no'}")
    from mermin.datapath.attach import probe_tcx

    try:
        supported = probe_tcx(dp.program_fd("mermin_ingress"))
    except Exception as exc:
        return _fail("tcx", f"probe failed: {exc}", _missing_hint(["NET_ADMIN"]))
    if supported:
        return _pass("tcx", "TCX links supported (preferred attach method)")
    return _skip("tcx", "TCX not supported by this kernel: classic TC (clsact) will be used")


@contextlib.contextmanager
def _veth_pair() -> Iterator[tuple[int, str]]:
    from pyroute2 import IPRoute

    name = f"mrmdg{secrets.token_hex(3)}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=f"mrmdp{name[5:]}")
        try:
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, state="up")
            yield index, name
        finally:
            with contextlib.suppress(Exception):  # deleting one end removes both
                ipr.link("del", index=ipr.link_lookup(ifname=name)[0])


def check_attach(dp: Datapath | None, config: Config) -> Result:
    if dp is None:
        return _skip("attach", "not tried (program not loaded)")
    from mermin.datapath.attach import Attacher

    instrument = config.discovery.instrument
    try:
        with _veth_pair() as (index, name):
            attacher = Attacher(dp, instrument.attach_mode, instrument.tcx_order,
                                instrument.tc_priority)
            try:
                attacher.attach(index, name)
                ok = index in attacher.attached
                attacher.detach(index)
                gone = index not in attacher.attached
            finally:
                attacher.detach_all()
                with contextlib.suppress(Exception):
                    attacher.close()
    except Exception as exc:
        return _fail("attach", f"test attach failed: {exc}",
                     _missing_hint(["NET_ADMIN"]) + "; set discovery \"instrument\" "
                     "{ attach_mode = \"tc\" } if TCX misbehaves")
    if not (ok and gone):
        return _fail("attach", "attach/detach did not take effect", "report a bug")
    return _pass("attach", f"attached and detached with {attacher.method} on a test veth pair")


def check_k8s(config: Config, timeout: float = 5.0) -> Result:
    informer = config.discovery.informer.k8s
    from mermin.enrich.k8s.client import KubeClient
    from mermin.enrich.k8s.resources import RESOURCES

    if not KubeClient.available(informer.kubeconfig_path):
        return _skip("k8s api", "not in a cluster and no kubeconfig: enrichment will be off")
    try:
        client = KubeClient(informer.kubeconfig_path, pool_size=2)
    except Exception as exc:
        return _fail("k8s api", str(exc), "fix the kubeconfig or the service account mount")
    denied, errors = [], []
    try:
        for resource in RESOURCES.values():
            try:
                response = client.get(resource.path, [("limit", 1)], (timeout, timeout))
                status = response.status
                response.release_conn()
            except Exception as exc:
                return _fail("k8s api", f"{client.host} unreachable: {exc}",
                             "check network policies/firewalls towards the API server")
            if status in (401, 403):
                denied.append(f"{resource.plural}({status})")
            elif status >= 400:
                errors.append(f"{resource.plural}({status})")
    finally:
        client.close()
    if denied:
        return _fail("k8s api", f"{client.host}: not allowed to list {', '.join(denied)}",
                     "bind the ClusterRole of the chart (rbac.create=true) to the agent's "
                     "ServiceAccount")
    if errors:
        return _fail("k8s api", f"{client.host}: errors listing {', '.join(errors)}",
                     "check the API server (these kinds are needed for enrichment)")
    return _pass("k8s api", f"{client.host} ({client.source}): can list all "
                 f"{len(RESOURCES)} kinds")


# --- driver --------------------------------------------------------------------------------------
def diagnose(config: Config, *, skip_attach: bool = False, skip_k8s: bool = False,
             caps: set[str] | None = None) -> list[Result]:
    """Run every check; never raises for a failing check."""
    kernel = kernel_version()
    caps = effective_caps() if caps is None else caps
    results = [check_kernel(kernel), check_btf(), check_capabilities(caps, kernel),
               check_bpffs()]
    obj_result, object_path = check_object()
    results.append(obj_result)
    netns_result, netns_path = check_netns(config.discovery.instrument.netns, caps)
    results.append(netns_result)
    if netns_result.failed:
        results.append(_skip("interfaces", "network namespace not usable"))
    else:
        results.append(check_interfaces(config, netns_path))
    bpffs_ok = not results[3].failed
    pin_root = BPFFS / f"mermin-diagnose-{secrets.token_hex(4)}" if bpffs_ok else None
    try:
        load_result, dp = check_load(object_path, caps, kernel, pin_root)
        results.append(load_result)
        try:
            results.append(check_tcx(dp, kernel))
            results.append(_skip("attach", "--skip-attach") if skip_attach
                           else check_attach(dp, config))
        finally:
            if dp is not None:
                dp.close()
    finally:
        if pin_root is not None:
            _remove_pins(pin_root)
    results.append(_skip("k8s api", "skipped") if skip_k8s else _guard("k8s api", check_k8s,
                                                                      config))
    return results


def _remove_pins(root: Path) -> None:
    """Remove what the test load pinned (files, then the directories, deepest first)."""
    if not root.exists():
        return
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()
    with contextlib.suppress(OSError):
        root.rmdir()


def _guard(name: str, check: Callable[..., Result], *args: Any) -> Result:
    try:
        return check(*args)
    except Exception as exc:  # a broken check must not hide the others
        return _fail(name, f"check crashed: {exc}", "report a bug")


def format_results(results: list[Result]) -> str:
    """One line per check, a `fix:` line under each failure, and a summary."""
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        lines.append(f"{r.status:<4}  {r.name:<{width}}  {r.detail}")
        if r.failed and r.hint:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {r.hint}")
    failed = sum(r.failed for r in results)
    lines.append(f"{failed} check(s) failed" if failed else "all checks passed")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """`mermin diagnose [--config FILE] [--skip-attach]`."""
    from mermin.config import load_config

    config = load_config(getattr(args, "config", None))
    results = diagnose(config, skip_attach=bool(getattr(args, "skip_attach", False)),
                       skip_k8s=bool(getattr(args, "skip_k8s", False)))
    sys.stdout.write(f"mermin diagnose: kernel {platform.release()}, uid {os.geteuid()}\n")
    sys.stdout.write(format_results(results))
    return 1 if any(r.failed for r in results) else 0
