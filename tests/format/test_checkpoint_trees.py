"""States at the edges of the format: ints of any size, crafted skeleton nodes, cycles, deep nesting."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from expstore import open_store
from expstore.checkpointing import CheckpointManager, backup_checkpoint
from expstore.errors import CorruptData
from expstore.format.checkpoint import write_flat
from expstore.format.tree import MAX_DEPTH

from ..cli.test_cli import cli
from ..workers import REPO_ROOT

BIG = 7**9000  # 7606 decimal digits: over Python's default limit of 4300


@pytest.mark.parametrize("where", ["ckpt", "c.h5", "c.zarr"])
def test_ints_of_any_size_round_trip_under_the_default_digit_limit(tmp_path, where):
    with CheckpointManager(tmp_path / where, "exp") as m:
        m.save_checkpoint({"big": BIG, "neg": -BIG, "edge": [2**63, -(2**63), 2**63 - 1, 0]}, 1)
        state = m.load_checkpoint()["state"]
        assert m.verify() == []
    assert state == {"big": BIG, "neg": -BIG, "edge": [2**63, -(2**63), 2**63 - 1, 0]}


def test_a_big_int_saved_by_an_unlimited_process_loads_and_verifies(tmp_path):
    url = str(tmp_path / "ckpt")
    code = ("import sys; sys.set_int_max_str_digits(0)\n"
            "from expstore.checkpointing import CheckpointManager\n"
            f"CheckpointManager({url!r}, 'exp').save_checkpoint({{'n': 7**9000}}, 3)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
    with CheckpointManager(url, "exp") as m:
        assert m.verify() == []
        assert m.load_checkpoint()["state"]["n"] == BIG
    shown = cli("show", f"{url}/exp_iter_000003.ckpt", "--json", cwd=tmp_path).stdout
    assert hex(BIG) in shown


def write_skeleton(url: str, iteration: int, node: dict) -> None:
    """A checkpoint whose state is the raw skeleton `node` (how older or hostile writers can look)."""
    with open_store(url) as store:
        extra = {"iteration": iteration, "timestamp": None, "metadata": {}, "tags": [], "experiment": "exp"}
        write_flat(store, f"exp_iter_{iteration:06d}.ckpt", {"t": "dict", "items": [["x", node]]}, {}, extra)
    with CheckpointManager(url, "exp", keep_last_n=None) as m:
        m.index.commit({"iteration": iteration, "key": f"exp_iter_{iteration:06d}.ckpt", "timestamp": None, "tags": [], "metadata": {}})


def test_the_old_decimal_form_reads_within_the_digit_limit(tmp_path):
    url = str(tmp_path / "ckpt")
    write_skeleton(url, 1, {"t": "int", "v": "-" + "9" * 4300})
    sys.set_int_max_str_digits(0)
    try:
        decimal = str(BIG)
    finally:
        sys.set_int_max_str_digits(4300)
    write_skeleton(url, 2, {"t": "int", "v": decimal})
    with CheckpointManager(url, "exp") as m:
        assert m.load_checkpoint("exp_iter_000001.ckpt")["state"] == {"x": -int("9" * 4300)}
        assert m.verify() == [m.ref_for("exp_iter_000002.ckpt")]  # as a load here: over this process's limit
        with pytest.raises(CorruptData, match="skeleton"):
            m.load_checkpoint("exp_iter_000002.ckpt")
        sys.set_int_max_str_digits(0)  # a process that lifts the limit reads it, as the writer did
        try:
            assert m.verify() == [] and m.load_checkpoint("exp_iter_000002.ckpt")["state"] == {"x": BIG}
        finally:
            sys.set_int_max_str_digits(4300)


@pytest.mark.parametrize("node", [
    {"t": "npscalar", "dtype": "<f8", "v": "0000"},                 # 2 bytes for an 8-byte float
    {"t": "npscalar", "dtype": "<f8", "v": "00" * 16},              # two floats for one scalar
    {"t": "npscalar", "dtype": "|O", "v": "00" * 8},                # an object pointer
    {"t": "npscalar", "dtype": "<x8", "v": "00"},                   # no dtype
    {"t": "int", "v": "12a"},
    {"t": "bytes", "v": "abc"},                                     # bad base64 padding
])
def test_verify_refuses_what_load_cannot_decode(tmp_path, node):
    url = str(tmp_path / "ckpt")
    with CheckpointManager(url, "exp") as m:
        m.save_checkpoint({"x": 1.5}, 1)
    write_skeleton(url, 2, node)
    with CheckpointManager(url, "exp") as m:
        assert m.verify() == [m.ref_for("exp_iter_000002.ckpt")]
        with pytest.raises(CorruptData, match="skeleton"):
            m.load_checkpoint("exp_iter_000002.ckpt")
        with pytest.warns(RuntimeWarning, match="exp_iter_000002"):
            assert m.load_checkpoint()["iteration"] == 1  # the fallback skips it, as verify said
        with pytest.raises(CorruptData):
            backup_checkpoint(m.ref_for("exp_iter_000002.ckpt"), str(tmp_path / "backup"))
    out = cli("verify", url, cwd=tmp_path, expect=1).stdout
    assert "BAD" in out and "exp_iter_000002.ckpt" in out and "1 bad" in out


def circular() -> dict:
    state: dict = {"w": np.zeros(2)}
    state["a"] = {"b": [1, state]}
    return state


def deep(levels: int) -> dict:
    state = node = {}
    for _ in range(levels - 1):
        node["k"] = {}
        node = node["k"]
    return state


@pytest.mark.parametrize("where", ["ckpt", "c.h5", "c.zarr", "memory://trees-deep"])
@pytest.mark.parametrize("blocking", [True, False])
def test_circular_and_too_deep_states_are_refused_by_path(tmp_path, where, blocking):
    url = where if "://" in where else tmp_path / where
    with CheckpointManager(url, "exp") as m:
        m.save_checkpoint({"ok": 1}, 1)
        with pytest.raises(TypeError, match=r"^state\['a'\]\['b'\]\[1\]: circular reference"):
            m.save_checkpoint(circular(), 2, blocking=blocking)
        with pytest.raises(ValueError, match=rf"^state\['k'\]\['k'\].*deeper than {MAX_DEPTH} levels"):
            m.save_checkpoint(deep(2000), 3, blocking=blocking)
        m.save_checkpoint(deep(MAX_DEPTH), 4, blocking=blocking)  # the limit itself is fine
        assert [c["iteration"] for c in m.list_checkpoints()] == [1, 4]
        assert m.load_checkpoint() ["state"] == deep(MAX_DEPTH)
        assert not [k for k in m.store.list("") if "000002" in k or "000003" in k]


def test_circular_metadata_is_refused_by_name(tmp_path):
    meta: dict = {"lr": [0.1]}
    meta["lr"].append(meta)
    with CheckpointManager(tmp_path, "exp") as m:
        with pytest.raises(TypeError, match=r"^metadata\['lr'\]\[1\]: circular reference"):
            m.save_checkpoint({"w": 1}, 1, meta)
        assert m.list_checkpoints() == []


def test_a_circular_sharded_state_is_refused(tmp_path):
    with CheckpointManager(tmp_path, "exp", rank=0, world_size=2) as m:
        with pytest.raises(TypeError, match="circular reference"):
            m.save_checkpoint(circular(), 1)
    assert list(tmp_path.iterdir()) == []
