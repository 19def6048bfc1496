"""Host snapshots for async saves: an exact, independent copy, also when copied in pieces on threads."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import numpy as np
import pytest

from expstore.checkpointing import snapshot
from expstore.checkpointing.snapshot import SnapshotPool

from ..trees import assert_same


def awkward_state() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((64, 48))
    return {
        "w": rng.standard_normal((300, 70)).astype(np.float32),
        "transposed": base.T,  # not C-contiguous: copied whole
        "every_other": base[::2],
        "records": np.array([(1, 2.5), (3, -1.0)] * 50, dtype=[("a", "<i2"), ("b", "<f8")]),
        "complex": (rng.standard_normal(999) + 1j).astype(np.complex64),
        "flags": rng.random(1001) < 0.5,
        "words": np.array(["a", "bc", "def"] * 40),
        "scalar": np.array(7.5),
        "empty": np.zeros((0, 3)),
        "same": None,  # filled below: one array twice in the tree stays shared
        "plain": [1, "x", {"n": None}],
    }


@pytest.fixture(params=["inline", "pieces on threads"])
def copy_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param != "inline":
        monkeypatch.setattr(snapshot, "PIECE_BYTES", 1000)  # many pieces, boundaries inside elements
        monkeypatch.setattr(snapshot, "PARALLEL_FROM", 0)
        monkeypatch.setattr(snapshot, "_threads", lambda: 2)
    return request.param


def test_snapshot_is_an_exact_independent_copy(copy_mode: str) -> None:
    state = awkward_state()
    state["same"] = state["w"]
    pool = SnapshotPool()
    for _ in range(2):  # the second round reuses the first one's buffers
        expected = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
        taken = pool.take(state)
        assert_same(taken, expected)
        assert taken["same"] is taken["w"]
        for key in ("w", "transposed", "records", "flags", "scalar"):
            assert not np.shares_memory(taken[key], state[key])
        state["w"] += 1  # the caller changes its state after the call: the snapshot keeps the old values
        state["records"]["a"] += 1
        assert_same(taken, expected)


def _take_in_child() -> None:
    state = {"w": np.arange(4096, dtype=np.float64)}
    taken = SnapshotPool().take(state)
    os._exit(0 if np.array_equal(taken["w"], state["w"]) else 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_gets_copy_threads_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child forked after the parent's copy threads started has none of them: a pool it
    inherited would never run its tasks, so the copy would hang."""
    monkeypatch.setattr(snapshot, "PIECE_BYTES", 1024)
    monkeypatch.setattr(snapshot, "PARALLEL_FROM", 0)
    monkeypatch.setattr(snapshot, "_threads", lambda: 2)
    SnapshotPool().take({"w": np.arange(4096, dtype=np.float64)})  # the parent's pool is running
    child = multiprocessing.get_context("fork").Process(target=_take_in_child)
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung copying its snapshot")
    assert child.exitcode == 0


def test_tensor_snapshots_copy_each_storage_once_into_reused_buffers() -> None:
    torch = pytest.importorskip("torch")
    emb = torch.nn.Parameter(torch.randn(10, 4))
    state = {"emb": emb, "head": emb, "row": emb.detach()[2], "bf": torch.randn(3).to(torch.bfloat16),
             "other": torch.arange(6).reshape(2, 3).t()}
    pool = SnapshotPool()
    first = pool.take(state)
    assert type(first["emb"]) is torch.nn.Parameter and first["emb"] is first["head"]
    assert first["row"].data_ptr() == first["emb"].data_ptr() + 2 * 4 * 4  # still a view of the copied storage
    assert first["emb"].data_ptr() != emb.data_ptr()
    assert all(torch.equal(first[k], v) for k, v in state.items()) and first["other"].stride() == (1, 3)
    with torch.no_grad():
        emb.add_(1.0)
    assert not torch.equal(first["emb"], emb)  # independent of the training state
    second = pool.take(state)
    assert second["emb"].data_ptr() == first["emb"].data_ptr()  # the buffer of the last snapshot, reused
    assert torch.equal(second["emb"], emb)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")
def test_cuda_tensors_snapshot_to_pinned_host_memory_and_load_back_on_their_device(tmp_path) -> None:
    import torch

    from expstore.checkpointing import CheckpointManager
    from expstore.format.torch_tensors import HostCopy

    state = {"w": torch.randn(1000, device="cuda"), "tied": None}
    state["tied"] = state["w"]
    copied = SnapshotPool().take(state)
    assert isinstance(copied["w"], HostCopy) and copied["w"].tensor.is_pinned() and copied["w"].device == "cuda:0"
    with CheckpointManager(tmp_path, "e", async_save=True) as manager:
        manager.save_checkpoint(state, 1)
        manager.wait_until_finished()
        back = manager.load_checkpoint()["state"]
    assert back["w"].device.type == "cuda" and torch.equal(back["w"], state["w"])
