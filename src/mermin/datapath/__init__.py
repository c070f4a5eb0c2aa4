"""The kernel side seen from Python: load the BPF object, attach it, read its maps.

    abi       numpy mirrors of bpf/flow.h (checked against the object's BTF by the tests)
    libbpf    ctypes binding of libbpf.so.1, errno -> mermin.errors
    btf       BTF reading (struct layouts, .rodata variables)
    loader    Datapath: open, configure (.rodata, map sizes), pin, load, counters
    attach    Attacher: TCX links or clsact + cls_bpf, rollback, orphan cleanup
    flowmap   FlowMap: batched FLOWS reads, atomic take, delete
    fake      FakeFlowMap: the same API without a kernel, for tests

Names are imported lazily so `mermin replay` does not pay for pyroute2 (used by attach).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Attacher",
    "Datapath",
    "DatapathSettings",
    "FakeFlowMap",
    "FlowMap",
    "FlowMapStats",
    "find_object_path",
]

_WHERE = {
    "Attacher": "attach",
    "Datapath": "loader",
    "DatapathSettings": "loader",
    "FakeFlowMap": "fake",
    "FlowMap": "flowmap",
    "FlowMapStats": "flowmap",
    "find_object_path": "loader",
}

if TYPE_CHECKING:
    from .attach import Attacher
    from .fake import FakeFlowMap
    from .flowmap import FlowMap, FlowMapStats
    from .loader import Datapath, DatapathSettings, find_object_path


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
