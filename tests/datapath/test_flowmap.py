"""FlowMap against a real FLOWS hash map, and FakeFlowMap against FlowMap.

The map is the stand-in object's FLOWS (struct flow_key -> struct flow_value), filled from
userspace so the contents are known exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.bpfbuild import STANDIN, compile_bpf

from mermin.datapath import libbpf
from mermin.datapath.abi import KEY_DTYPE, VALUE_DTYPE
from mermin.datapath.fake import FakeFlowMap, key, value
from mermin.datapath.flowmap import FlowMap
from mermin.datapath.loader import Datapath, DatapathSettings

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root")]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bpf(STANDIN, tmp_path_factory.mktemp("bpf"), "standin")


@pytest.fixture
def dp(standin: Path) -> Iterator[Datapath]:
    with Datapath.load(standin, DatapathSettings(pin=False, flows_capacity=4096)) as datapath:
        yield datapath


def entries(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n distinct keys (random bytes everywhere, padding zero) and random values."""
    rng = np.random.default_rng(seed)
    keys = np.frombuffer(rng.bytes(n * KEY_DTYPE.itemsize), KEY_DTYPE).copy()
    keys["ip_version"] = 6
    keys["_pad"] = 0
    keys["port_a"] = np.arange(n)  # distinct
    values = np.frombuffer(rng.bytes(n * VALUE_DTYPE.itemsize), VALUE_DTYPE).copy()
    return keys, values


def fill(fd: int, keys: np.ndarray, values: np.ndarray) -> None:
    keys, values = np.ascontiguousarray(keys), np.ascontiguousarray(values)
    assert libbpf.map_update_batch(fd, keys, values, len(keys)) == len(keys)


def as_dict(keys: np.ndarray, values: np.ndarray) -> dict[bytes, bytes]:
    return {k.tobytes(): v.tobytes() for k, v in zip(keys, values, strict=True)}


def test_empty(dp: Datapath) -> None:
    keys, values = dp.flows.read_all()
    assert keys.dtype == KEY_DTYPE and values.dtype == VALUE_DTYPE
    assert len(keys) == len(values) == 0
    assert dp.flows.capacity == 4096


@pytest.mark.parametrize("batch", [64, 4096])
def test_read_all_returns_every_entry_byte_for_byte(dp: Datapath, batch: int) -> None:
    keys, values = entries(3000)
    fill(dp.map_fd("FLOWS"), keys, values)
    flows = FlowMap(dp.map_fd("FLOWS"), dp.flows.capacity, batch_size=batch)
    got_k, got_v = flows.read_all()
    assert as_dict(got_k, got_v) == as_dict(keys, values)
    assert flows.stats.entries_read == 3000
    if batch == 64:
        assert flows.stats.batch_calls >= 3000 // 64
    # A second read gives the same, and the returned arrays are not reused buffers.
    again_k, _ = flows.read_all()
    assert as_dict(again_k, _) == as_dict(keys, values)
    assert got_k.base is None or got_k.base is not again_k.base


def test_read_all_grows_past_a_full_map(standin: Path) -> None:
    """Capacity 64 and full: the buffer (capacity + one batch) is enough; stats say so."""
    with Datapath.load(standin, DatapathSettings(pin=False, flows_capacity=64)) as dp:
        keys, values = entries(64, seed=2)
        fill(dp.map_fd("FLOWS"), keys, values)
        got_k, got_v = dp.flows.read_all()
        assert as_dict(got_k, got_v) == as_dict(keys, values)


def test_take_returns_final_values_and_removes(dp: Datapath) -> None:
    fd = dp.map_fd("FLOWS")
    keys, values = entries(100, seed=3)
    fill(fd, keys, values)
    read_k, _ = dp.flows.read_all()
    # Packets arrive after the read: the kernel updates some entries.
    later = values[:10].copy()
    later["dir"]["packets"] += 5
    fill(fd, keys[:10], later)
    missing, _ = key("192.0.2.1", "192.0.2.2", 1, 2, 17)
    ask = np.concatenate([keys[:20], np.asarray([missing])])
    got, found = dp.flows.take(ask)
    assert found.tolist() == [True] * 20 + [False]
    assert got[:10].tobytes() == later.tobytes()  # the final values, not the ones read
    assert got[10:20].tobytes() == values[10:20].tobytes()
    assert got[20].tobytes() == bytes(VALUE_DTYPE.itemsize)
    remaining, _ = dp.flows.read_all()
    assert len(remaining) == 80 and len(read_k) == 100
    assert dp.flows.stats.taken == 20 and dp.flows.stats.take_missing == 1


def test_delete_skips_absent_keys(dp: Datapath) -> None:
    keys, values = entries(50, seed=4)
    fill(dp.map_fd("FLOWS"), keys, values)
    absent, _ = entries(3, seed=99)
    ask = np.concatenate([keys[:5], absent[:1], keys[5:10], absent[1:], keys[10:12]])
    assert dp.flows.delete(ask) == 12
    assert dp.flows.stats.delete_missing == 3
    assert len(dp.flows.read_all()[0]) == 38
    assert dp.flows.delete(keys[:0]) == 0


def test_lookup(dp: Datapath) -> None:
    keys, values = entries(2, seed=5)
    fill(dp.map_fd("FLOWS"), keys, values)
    assert dp.flows.lookup(keys[1]).tobytes() == values[1].tobytes()
    assert dp.flows.lookup(entries(1, seed=6)[0][0]) is None


def test_fake_behaves_like_the_real_map(dp: Datapath) -> None:
    keys, values = entries(40, seed=7)
    fake = FakeFlowMap(capacity=dp.flows.capacity)
    fake.put(keys, values)
    fill(dp.map_fd("FLOWS"), keys, values)
    assert as_dict(*fake.read_all()) == as_dict(*dp.flows.read_all())
    ask = np.concatenate([keys[::3], entries(1, seed=8)[0]])
    real_v, real_f = dp.flows.take(ask)
    fake_v, fake_f = fake.take(ask)
    assert real_v.tobytes() == fake_v.tobytes() and (real_f == fake_f).all()
    assert dp.flows.delete(keys[1::3]) == fake.delete(keys[1::3])
    assert as_dict(*fake.read_all()) == as_dict(*dp.flows.read_all())
    assert (fake.stats.taken, fake.stats.take_missing) == (
        dp.flows.stats.taken,
        dp.flows.stats.take_missing,
    )


def test_fake_key_normalization_and_capacity() -> None:
    k1, side1 = key("10.0.0.2", "10.0.0.1", 80, 5000, 6)
    k2, side2 = key("10.0.0.1", "10.0.0.2", 5000, 80, 6)
    assert k1.tobytes() == k2.tobytes() and (side1, side2) == (1, 0)
    assert bytes(k1["addr_a"][:4]) == bytes([10, 0, 0, 1]) and k1["port_a"] == 5000
    k6, _ = key("fd00::1", "fd00::2", 1, 2, 17)
    assert k6["ip_version"] == 6
    fake = FakeFlowMap(capacity=1)
    fake.put(k1, value(first_seen_ns=1))
    assert fake.get(k1)["first_seen_ns"] == 1
    with pytest.raises(OverflowError):
        fake.put(k6, value())
