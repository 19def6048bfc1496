"""The array level: write_tree / read_tree round-trip exactly on every store.

Array-native stores (HDF5, Zarr) keep real datasets; the others one checkpoint object (expstore.format.checkpoint).
"""

from __future__ import annotations

import numpy as np
import pytest

from expstore import InvalidKey, KeyNotFound, StoreError

from ..trees import assert_same


@pytest.fixture
def array_store(store):
    return store


def _tree():
    rng = np.random.default_rng(0)
    return {
        "model": {"w": rng.standard_normal((64, 32)).astype(np.float32), "b": np.zeros(32, dtype=">f8")},
        "step": 2**70 + 1,
        "lr": 1e-3,
        "flags": [True, False, None],
        "name": "run-ü",
        "blob": b"\x00\x01raw",
        "floats": (float("nan"), float("inf"), -0.0),
        "scalars": {"i": np.int64(-5), "f": np.float16(0.5), "c": np.complex64(1 + 2j)},
        "arrays": [
            np.array(3.5),
            np.array([True, False]),
            np.arange(6, dtype=np.complex128).reshape(2, 3),
            np.arange(20, dtype=np.int16)[::3],
            np.empty((0, 4), dtype=np.uint8),
            np.arange(12, dtype=np.int32).reshape(3, 4).T,
        ],
        "empty": {},
    }


def test_tree_round_trips_exactly(array_store):
    tree = _tree()
    token = array_store.write_tree("ckpt/state", tree)
    assert isinstance(token, str)
    assert_same(tree, array_store.read_tree("ckpt/state"))


def test_tree_is_one_key_and_delete_removes_all_of_it(array_store):
    array_store.write("other", b"x")
    array_store.write_tree("t", _tree())
    assert array_store.list() == ["other", "t"]
    assert array_store.exists("t")
    array_store.delete("t")
    assert array_store.list() == ["other"]
    with pytest.raises(KeyNotFound):
        array_store.read_tree("t")


def test_select_reads_only_some_arrays(array_store):
    tree = _tree()
    array_store.write_tree("t", tree)
    part = array_store.read_tree("t", select=["model/w"])
    assert list(part["model"]) == ["w"]
    np.testing.assert_array_equal(part["model"]["w"], tree["model"]["w"])
    assert part["step"] == tree["step"]  # plain values always come back
    with pytest.raises(KeyError, match="nope"):
        array_store.read_tree("t", select=["nope"])


def test_rewriting_a_tree_replaces_it(array_store):
    array_store.write_tree("t", {"a": np.ones(3)})
    array_store.write_tree("t", {"b": np.zeros(2)})
    back = array_store.read_tree("t")
    assert list(back) == ["b"]


def test_unstorable_leaf_names_its_path_and_writes_nothing(array_store):
    array_store.write_tree("t", {"a": np.ones(3)})
    with pytest.raises(TypeError, match=r"\['optimizer'\]\['fn'\]"):
        array_store.write_tree("t", {"optimizer": {"fn": lambda x: x}})
    with pytest.raises(TypeError, match="object"):
        array_store.write_tree("u", {"o": np.array([object()])})
    np.testing.assert_array_equal(array_store.read_tree("t")["a"], np.ones(3))
    assert array_store.list() == ["t"]


def test_tree_keys_follow_the_key_rules(array_store):
    with pytest.raises(InvalidKey):
        array_store.write_tree("../escape", {"a": np.ones(1)})


def test_bytes_value_and_tree_do_not_mix_up(array_store):
    array_store.write("v", b"bytes")
    array_store.write_tree("t", {"a": np.ones(1)})
    assert array_store.read("v") == b"bytes"
    with pytest.raises(StoreError, match="not a tree|checkpoint"):
        array_store.read_tree("v")
    if array_store.supports_arrays:  # elsewhere a tree is one checkpoint object, readable as bytes
        with pytest.raises(StoreError, match="read_tree"):
            array_store.read("t")
