"""Reading BTF through libbpf: struct layouts, enums and data-section variables.

The loader uses `datasec_vars` to find `cfg` inside .rodata (so other constants in that
section never shift it); tests use `Btf.parse(object_path)` to check abi.py against the object.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from mermin.errors import DatapathError

from . import libbpf

__all__ = ["Btf", "Member", "datasec_vars"]

# BTF_KIND_* (include/uapi/linux/btf.h)
KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_VAR, KIND_DATASEC = 8, 9, 10, 14, 15
_U32 = ctypes.POINTER(ctypes.c_uint32)


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    offset: int  # bytes
    size: int  # bytes


class Btf:
    """A view of a libbpf `struct btf *` (owned when made by `parse`)."""

    def __init__(self, ptr: int, owned: bool = False) -> None:
        if not ptr:
            raise DatapathError("no BTF available")
        self._ptr, self._owned = ptr, owned

    @classmethod
    def parse(cls, path: str | os.PathLike[str]) -> Btf:
        """BTF of an ELF object or raw BTF file (e.g. /sys/kernel/btf/vmlinux)."""
        ptr = libbpf.lib().btf__parse(os.fsencode(path), None)
        if not ptr:
            raise DatapathError(f"cannot read BTF from {os.fspath(path)}")
        return cls(ptr, owned=True)

    def close(self) -> None:
        if self._owned and self._ptr:
            libbpf.lib().btf__free(self._ptr)
        self._ptr = 0

    def __enter__(self) -> Btf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw access ---------------------------------------------------------------------------
    def _type(self, type_id: int) -> tuple[str, int, int, int, int]:
        """(name, kind, vlen, size_or_type, address of the trailing data) of a type id."""
        lib = libbpf.lib()
        addr = lib.btf__type_by_id(self._ptr, type_id)
        if not addr:
            raise DatapathError(f"BTF has no type id {type_id}")
        words = ctypes.cast(addr, _U32)
        name_off, info, size_or_type = words[0], words[1], words[2]
        name = (lib.btf__name_by_offset(self._ptr, name_off) or b"").decode()
        return name, (info >> 24) & 0x1F, info & 0xFFFF, size_or_type, addr + 12

    def find(self, name: str, kind: int) -> int:
        type_id = libbpf.lib().btf__find_by_name_kind(self._ptr, name.encode(), kind)
        if type_id < 0:
            raise DatapathError(f"BTF has no type {name!r} (kind {kind})")
        return type_id

    def size(self, type_id: int) -> int:
        size = libbpf.lib().btf__resolve_size(self._ptr, type_id)
        if size < 0:
            raise DatapathError(f"cannot resolve the size of BTF type {type_id}")
        return size

    # -- layouts ------------------------------------------------------------------------------
    def struct(self, name: str) -> tuple[int, list[Member]]:
        """(size, members with byte offsets and sizes) of `struct name` (no bitfields)."""
        type_id = self.find(name, KIND_STRUCT)
        _, _, vlen, size, extra = self._type(type_id)
        words = ctypes.cast(extra, _U32)
        members = []
        for i in range(vlen):  # struct btf_member {name_off, type, offset (bits)}
            name_off, mtype, bits = words[3 * i], words[3 * i + 1], words[3 * i + 2]
            mname = (libbpf.lib().btf__name_by_offset(self._ptr, name_off) or b"").decode()
            members.append(Member(mname, (bits & 0xFFFFFF) // 8, self.size(mtype)))
        return size, members

    def enum(self, name: str) -> dict[str, int]:
        """Enumerators of `enum name`."""
        type_id = self.find(name, KIND_ENUM)
        _, _, vlen, _, extra = self._type(type_id)
        words = ctypes.cast(extra, _U32)
        ints = ctypes.cast(extra, ctypes.POINTER(ctypes.c_int32))
        out = {}
        for i in range(vlen):  # struct btf_enum {name_off, val}
            ename = (libbpf.lib().btf__name_by_offset(self._ptr, words[2 * i]) or b"").decode()
            out[ename] = ints[2 * i + 1]
        return out

    def datasec(self, name: str) -> dict[str, tuple[int, int]]:
        """{variable: (offset, size)} of a data section such as ".rodata"."""
        type_id = self.find(name, KIND_DATASEC)
        _, _, vlen, _, extra = self._type(type_id)
        words = ctypes.cast(extra, _U32)
        out = {}
        for i in range(vlen):  # struct btf_var_secinfo {type, offset, size}
            var_name = self._type(words[3 * i])[0]
            out[var_name] = (words[3 * i + 1], words[3 * i + 2])
        return out


def datasec_vars(btf_ptr: int, section: str) -> dict[str, tuple[int, int]]:
    """{variable: (offset, size)} of `section` in the BTF of an open object."""
    return Btf(btf_ptr).datasec(section)
