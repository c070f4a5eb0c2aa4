"""The libbpf binding and the loader, against the real kernel.

Most tests use small objects compiled here (a stand-in with the real maps and ABI types, a
program the verifier must reject) so they pin down the loader's behaviour on their own; the
tests marked `real_object` load build/mermin.bpf.o.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.bpfbuild import STANDIN, compile_bpf, private_bpffs

from mermin.datapath import libbpf, loader
from mermin.datapath.abi import CONFIG_DTYPE, KEY_DTYPE, VALUE_DTYPE, Counter, Tunnel
from mermin.datapath.fake import key as make_key
from mermin.datapath.loader import Datapath, DatapathSettings
from mermin.errors import DatapathError, VerifierError

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]

REJECTED = textwrap.dedent(
    """
    #include <linux/bpf.h>
    #include <bpf/bpf_helpers.h>
    SEC("tc") int mermin_bad(struct __sk_buff *skb)
    {
        void *data = (void *)(long)skb->data;
        return *(__u32 *)(data + 20); /* no bounds check: must be rejected */
    }
    char LICENSE[] SEC("license") = "GPL";
    """
)

FRAME = bytes(14 + 20 + 8)  # Ethernet + IPv4 + UDP sized, content irrelevant for the stand-in


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bpf(STANDIN, tmp_path_factory.mktemp("bpf"), "standin")


@pytest.fixture
def pin_root() -> Iterator[Path]:
    with private_bpffs() as mnt:
        yield mnt / "mermin_v1"


def test_rodata_var_and_test_run(standin: Path) -> None:
    with libbpf.BpfObject.open(standin) as obj:
        before = obj.rodata
        cfg = np.zeros(1, CONFIG_DTYPE)
        cfg["vxlan_port"], cfg["replay"] = 8472, 1
        obj.set_rodata_var("cfg", cfg.tobytes())
        # padding_before_cfg (4 bytes, value 1) is untouched: the offset came from BTF.
        assert obj.rodata[:4] == before[:4] == struct.pack("<I", 1)
        obj.load()
        fd = obj.program_fd("mermin_ingress")
        retval, duration = libbpf.prog_test_run(fd, FRAME, ctx=libbpf.skb_ctx(ifindex=1, tstamp=42))
        assert retval == 8472 + 1
        assert duration >= 0
        keys = np.zeros(4, KEY_DTYPE)
        values = np.zeros(4, VALUE_DTYPE)
        n, done = libbpf.map_lookup_batch(
            obj.map_fd("FLOWS"), None, np.zeros(2, np.uint64), keys, values, 4
        )
        assert (n, done) == (1, True)
        assert keys[0]["addr_a"][0] == 1  # skb->ifindex from ctx_in
        assert values[0]["last_seen_ns"] == 42  # skb->tstamp from ctx_in


def test_prog_test_run_repeat(standin: Path) -> None:
    with libbpf.BpfObject.open(standin) as obj:
        obj.load()
        retval, duration = libbpf.prog_test_run(obj.program_fd("mermin_egress"), FRAME, repeat=1000)
        assert retval == 4789
        assert 0 < duration < 1_000_000  # average ns per run


def test_verifier_rejection_is_one_line_with_log_tail(tmp_path: Path) -> None:
    bad = compile_bpf(REJECTED, tmp_path, "rejected")
    with libbpf.BpfObject.open(bad) as obj, pytest.raises(VerifierError) as info:
        obj.load()
    message = str(info.value)
    assert "\n" not in message
    assert "mermin_bad" in message and "outside of the packet" in message
    assert "invalid access to packet" in info.value.log_tail


@pytest.mark.parametrize("content", [None, b"", os.urandom(4096), b"\x7fELF" + bytes(60)])
def test_bad_object_files(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "mermin.bpf.o"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatapathError) as info:
        Datapath.load(path, DatapathSettings(pin=False))
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_datapath_load_counters_and_config(standin: Path) -> None:
    settings = DatapathSettings(pin=False, vxlan_port=4790, flows_capacity=2048)
    with Datapath.load(standin, settings) as dp:
        assert dp.flows.capacity == 2048
        assert set(dp.counters()) == {c.name.lower() for c in Counter}
        assert dp.counters()["seen"] == 0
        for name in loader.PROGRAMS:
            retval, _ = libbpf.prog_test_run(dp.program_fd(name), FRAME, repeat=5)
            assert retval == 4790
        assert dp.counters()["seen"] == 10
        keys, values = dp.flows.read_all()
        assert len(keys) == 1 and values[0]["dir"][0]["packets"] == 1


def test_pinned_maps_are_reused_by_a_second_load(standin: Path, pin_root: Path) -> None:
    settings = DatapathSettings(pin_root=pin_root, flows_capacity=1024)
    k, _ = make_key("10.0.0.1", "10.0.0.2", 1000, 80, 6)
    v = np.zeros(1, VALUE_DTYPE)
    v["first_seen_ns"] = 123
    with Datapath.load(standin, settings) as first:
        libbpf.map_update(first.map_fd("FLOWS"), np.asarray(k).reshape(1), v)
        libbpf.prog_test_run(first.program_fd("mermin_ingress"), FRAME, repeat=3)
    assert sorted(p.name for p in pin_root.iterdir()) == ["COUNTERS", "FLOWS"]
    with Datapath.load(standin, settings) as second:  # a restarted agent
        keys, _ = second.flows.read_all()
        assert k.tobytes() in {x.tobytes() for x in keys}
        assert second.counters()["seen"] == 3
    # Another capacity: the stale pin is replaced, not an error.
    with Datapath.load(standin, DatapathSettings(pin_root=pin_root, flows_capacity=512)) as third:
        assert third.flows.capacity == 512
        assert len(third.flows.read_all()[0]) == 0
        third.unpin()
    assert not pin_root.exists()


def test_pin_root_outside_bpffs_is_a_clear_error(standin: Path, tmp_path: Path) -> None:
    settings = DatapathSettings(pin_root=tmp_path / "pins", mount_bpffs=False)
    with pytest.raises(DatapathError, match="not on a BPF filesystem"):
        Datapath.load(standin, settings)


def test_bpffs_is_mounted_when_missing(standin: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "bpf"
    try:
        with Datapath.load(standin, DatapathSettings(pin_root=mnt / "mermin_v1")) as dp:
            assert loader._bpffs_mounted(mnt)
            assert (mnt / "mermin_v1" / "FLOWS").exists()
            dp.unpin()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    assert not loader._bpffs_mounted(mnt)


def test_missing_kernel_btf_is_a_clear_error(
    standin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(loader, "VMLINUX_BTF", tmp_path / "vmlinux")
    with pytest.raises(DatapathError, match="CONFIG_DEBUG_INFO_BTF"):
        Datapath.load(standin, DatapathSettings(pin=False))


def test_find_object_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERMIN_BPF_OBJECT", str(tmp_path / "x.o"))
    assert loader.find_object_path() == tmp_path / "x.o"
    monkeypatch.delenv("MERMIN_BPF_OBJECT")
    monkeypatch.setattr(loader, "_REPO", tmp_path)
    monkeypatch.setattr(loader, "SYSTEM_OBJECT", tmp_path / "none.o")
    with pytest.raises(DatapathError, match="make bpf"):
        loader.find_object_path()
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "mermin.bpf.o").write_bytes(b"")
    assert loader.find_object_path() == tmp_path / "build" / "mermin.bpf.o"


def test_unprivileged_load_names_the_capabilities(standin: Path) -> None:
    """As `nobody` with no capabilities, loading fails with PermissionDeniedError."""
    readable = Path(tempfile.mkdtemp(prefix="mlobj"))
    try:
        shutil.copy(standin, readable / "standin.bpf.o")
        readable.chmod(0o755)
        (readable / "standin.bpf.o").chmod(0o644)
        _load_as_nobody(readable / "standin.bpf.o")
    finally:
        shutil.rmtree(readable)


def _load_as_nobody(standin: Path) -> None:
    code = textwrap.dedent(
        f"""
        from mermin.datapath.loader import Datapath, DatapathSettings
        from mermin.errors import PermissionDeniedError
        try:
            Datapath.load({str(standin)!r}, DatapathSettings(pin=False))
        except PermissionDeniedError as exc:
            print("DENIED", exc)
        """
    )
    argv = [
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-all", sys.executable, "-c", code,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("DENIED"), proc.stdout + proc.stderr
    assert "CAP_BPF" in proc.stdout and "CAP_NET_ADMIN" in proc.stdout


# -- the real object ------------------------------------------------------------------------
def vxlan_frame(dport: int) -> bytes:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    inner = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags="S")
    outer = Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=50000, dport=dport)
    return bytes(outer / VXLAN(vni=7) / inner)


@pytest.mark.parametrize("vxlan_port", [4790, 4789])
def test_real_object_reads_the_vxlan_port_from_rodata(bpf_object: Path, vxlan_port: int) -> None:
    """The same packet (UDP to 4790) is a VXLAN tunnel only when cfg.vxlan_port says so."""
    settings = DatapathSettings(pin=False, vxlan_port=vxlan_port)
    with Datapath.load(bpf_object, settings) as dp:
        libbpf.prog_test_run(dp.program_fd("mermin_ingress"), vxlan_frame(4790))
        keys, values = dp.flows.read_all()
        assert len(keys) == 1
        if vxlan_port == 4790:
            expected, _ = make_key("10.0.0.1", "10.0.0.2", 1234, 80, 6)
            assert values[0]["tunnel_type"] == Tunnel.VXLAN and values[0]["tunnel_id"] == 7
        else:
            expected, _ = make_key("192.0.2.1", "192.0.2.2", 50000, 4790, 17)
            assert values[0]["tunnel_type"] == Tunnel.NONE
        assert keys[0].tobytes() == expected.tobytes()
        assert dp.counters()["counted"] == 1


@pytest.mark.parametrize("replay", [True, False])
def test_real_object_clock_follows_the_replay_flag(bpf_object: Path, replay: bool) -> None:
    tstamp = 1_700_000_000_123_456_789
    with Datapath.load(bpf_object, DatapathSettings(pin=False, replay=replay)) as dp:
        start = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        ctx = libbpf.skb_ctx(tstamp=tstamp)
        libbpf.prog_test_run(dp.program_fd("mermin_egress"), vxlan_frame(4789), ctx=ctx)
        end = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        first_seen = int(dp.flows.read_all()[1][0]["first_seen_ns"])
    if replay:
        assert first_seen == tstamp
    else:
        assert start <= first_seen <= end
