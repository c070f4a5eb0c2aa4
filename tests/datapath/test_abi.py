"""abi.py against the BTF of the built object: every size, offset and enum value.

The layouts are read with `bpftool btf dump ... format raw -j` (independent of our own BTF
reader, which is cross-checked here too). Enums that the program only uses as constants are
not in its BTF, so they are read from a probe object compiled from bpf/flow.h itself.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
from enum import IntEnum
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.bpfbuild import REPO, compile_bpf

from mermin.datapath import abi, libbpf
from mermin.datapath.btf import Btf

pytestmark = [pytest.mark.privileged]

STRUCTS = {
    "flow_key": abi.KEY_DTYPE,
    "flow_dir": abi.DIR_DTYPE,
    "flow_value": abi.VALUE_DTYPE,
    "mermin_config": abi.CONFIG_DTYPE,
}
ENUMS: dict[str, tuple[type[IntEnum], str]] = {
    "mermin_counter": (abi.Counter, "MERMIN_CNT_"),
    "mermin_hook": (abi.Hook, "MERMIN_HOOK_"),
    "mermin_tunnel": (abi.Tunnel, "MERMIN_TUNNEL_"),
}

ENUM_PROBE = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "flow.h"
/* Variables of each enum type put the enums into BTF. */
enum mermin_counter probe_counter;
enum mermin_hook probe_hook;
enum mermin_tunnel probe_tunnel;
enum mermin_tcp_state probe_tcp_state;
char LICENSE[] SEC("license") = "GPL";
"""


class RawBtf:
    """Types of `bpftool btf dump file X format raw -j`, with sizes resolved."""

    def __init__(self, path: Path) -> None:
        argv = ["bpftool", "btf", "dump", "file", str(path), "format", "raw", "-j"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        self.types = {t["id"]: t for t in json.loads(out)["types"]}

    def named(self, kind: str, name: str) -> dict:
        found = [t for t in self.types.values() if t["kind"] == kind and t["name"] == name]
        assert len(found) == 1, f"{kind} {name}: {len(found)} definitions in BTF"
        return found[0]

    def size(self, type_id: int) -> int:
        t = self.types[type_id]
        if t["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            return self.size(t["type_id"])
        if t["kind"] == "ARRAY":
            return t["nr_elems"] * self.size(t["type_id"])
        if t["kind"] == "PTR":
            return 8
        return t["size"]


@cache
def object_btf() -> RawBtf:
    path = REPO / "build" / "mermin.bpf.o"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make bpf`")
    return RawBtf(path)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bpf(ENUM_PROBE, tmp_path_factory.mktemp("abi"), "enum_probe")


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct_layout_matches_btf(name: str) -> None:
    btf = object_btf()
    struct = btf.named("STRUCT", name)
    dtype = STRUCTS[name]
    assert struct["size"] == dtype.itemsize, f"sizeof(struct {name})"
    assert [m["name"] for m in struct["members"]] == list(dtype.names)
    for member in struct["members"]:
        field, offset = dtype.fields[member["name"]][:2]
        assert member["bits_offset"] % 8 == 0, f"{name}.{member['name']} is a bitfield"
        assert member["bits_offset"] // 8 == offset, f"offset of {name}.{member['name']}"
        assert btf.size(member["type_id"]) == field.itemsize, f"size of {name}.{member['name']}"


def test_our_btf_reader_agrees_with_bpftool() -> None:
    with Btf.parse(REPO / "build" / "mermin.bpf.o") as btf:
        for name, dtype in STRUCTS.items():
            size, members = btf.struct(name)
            assert size == dtype.itemsize
            assert [(m.name, m.offset, m.size) for m in members] == [
                (f, dtype.fields[f][1], dtype.fields[f][0].itemsize) for f in dtype.names
            ]


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum_values_match_flow_h(name: str, probe: Path) -> None:
    enum, prefix = ENUMS[name]
    with Btf.parse(probe) as btf:
        values = btf.enum(name)
    expected = {prefix + member.name: member.value for member in enum}
    if name == "mermin_counter":
        expected[prefix + "MAX"] = abi.COUNTER_MAX
    assert values == expected


def test_abi_version_matches_flow_h() -> None:
    text = (REPO / "bpf" / "flow.h").read_text()
    match = re.search(r"#define\s+MERMIN_ABI_VERSION\s+(\d+)", text)
    assert match and int(match.group(1)) == abi.ABI_VERSION


@pytest.mark.usefixtures("require_root")
def test_object_maps_and_config_use_the_abi_types() -> None:
    with libbpf.BpfObject.open(REPO / "build" / "mermin.bpf.o") as obj:
        flows = obj.map("FLOWS")
        assert (flows.key_size, flows.value_size) == (
            abi.KEY_DTYPE.itemsize,
            abi.VALUE_DTYPE.itemsize,
        )
        counters = obj.map("COUNTERS")
        assert (counters.key_size, counters.value_size) == (4, 8)
        assert counters.max_entries == abi.COUNTER_MAX
        assert {p.name for p in obj.programs()} >= {"mermin_ingress", "mermin_egress"}
    btf = object_btf()
    rodata = btf.named("DATASEC", ".rodata")
    cfg = [v for v in rodata["vars"] if btf.types[v["type_id"]]["name"] == "cfg"]
    assert len(cfg) == 1 and cfg[0]["size"] == abi.CONFIG_DTYPE.itemsize


def test_skbuff_ctx_matches_the_kernel() -> None:
    """libbpf.SkBuff (the BPF_PROG_TEST_RUN context) against the running kernel's BTF."""
    with Btf.parse("/sys/kernel/btf/vmlinux") as btf:
        size, members = btf.struct("__sk_buff")
    assert ctypes.sizeof(libbpf.SkBuff) == size
    ours = {name: getattr(libbpf.SkBuff, name) for name, *_ in libbpf.SkBuff._fields_}
    for m in members:
        if m.name:  # anonymous unions (flow_keys, sk) are covered by their own fields
            assert ours[m.name].offset == m.offset, m.name
            assert ours[m.name].size == m.size, m.name


def test_dtypes_are_little_endian_and_packed_like_c() -> None:
    for dtype in STRUCTS.values():
        assert dtype.isalignedstruct
        for name in dtype.names:
            base = dtype.fields[name][0].base
            assert base.byteorder in ("<", "|", "=") and np.little_endian
