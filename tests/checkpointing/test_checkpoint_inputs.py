"""Arguments of the checkpoint API: AutoCheckpoint's plain state-dict form, integral iterations, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from expstore.checkpointing import AutoCheckpoint, CheckpointManager


@pytest.fixture
def mgr(tmp_path):
    with CheckpointManager(tmp_path / "ckpt", "exp") as m:
        yield m


def test_auto_checkpoint_takes_a_state_dict_form(mgr):
    theta = np.arange(4.0)
    with pytest.raises(RuntimeError):
        with AutoCheckpoint(mgr, lambda: {"theta": theta, "iteration": np.int64(17)}):
            raise RuntimeError("diverged")
    loaded = mgr.load_checkpoint()
    assert loaded["iteration"] == 17 and loaded["state"]["iteration"] == 17
    np.testing.assert_array_equal(loaded["state"]["theta"], theta)
    assert loaded["metadata"] == {"reason": "exception: RuntimeError"}


def test_auto_checkpoint_state_dict_without_iteration_follows_the_last_saved(mgr):
    with pytest.raises(KeyError):
        with AutoCheckpoint(mgr, lambda: {"theta": 1.0}):
            raise KeyError("x")
    assert [c["iteration"] for c in mgr.list_checkpoints()] == [0]
    mgr.save_checkpoint({"theta": 2.0}, 41)
    with pytest.raises(KeyError):
        with AutoCheckpoint(mgr, lambda: {"theta": 3.0}):
            raise KeyError("x")
    assert mgr.load_checkpoint()["iteration"] == 42


def test_auto_checkpoint_tuple_form_still_works(mgr):
    with pytest.raises(ValueError):
        with AutoCheckpoint(mgr, lambda: ({"w": 1}, np.int32(3), {"loss": 0.25})):
            raise ValueError
    assert mgr.load_checkpoint()["metadata"] == {"loss": 0.25, "reason": "exception: ValueError"}


@pytest.mark.parametrize("got, message", [(["a", "b", "c", "d"], "get_state\\(\\) must return"),
                                          ({"iteration": "7"}, "get_state\\(\\)\\['iteration'\\]")])
def test_auto_checkpoint_bad_get_state_names_it(mgr, got, message):
    with pytest.raises(TypeError, match=message):
        with AutoCheckpoint(mgr, lambda: got):
            raise OSError
    assert mgr.list_checkpoints() == []


@pytest.mark.parametrize("iteration", [np.int64(5), np.uint8(5), np.int32(5)])
def test_numpy_integer_iterations_are_iterations(mgr, iteration):
    ref = mgr.save_checkpoint({"w": 1}, iteration=iteration)
    assert ref.endswith("exp_iter_000005.ckpt")
    entry = mgr.list_checkpoints()[0]
    assert entry["iteration"] == 5 and type(entry["iteration"]) is int
    assert mgr.should_save_checkpoint(np.int64(100))


@pytest.mark.parametrize("bad, error", [(True, TypeError), (np.bool_(True), TypeError), (5.0, TypeError),
                                        ("5", TypeError), (-1, ValueError)])
def test_bad_iterations_are_refused_by_name(mgr, bad, error):
    with pytest.raises(error, match="iteration"):
        mgr.save_checkpoint({"w": 1}, bad)
    assert mgr.list_checkpoints() == []


def test_should_save_checkpoint_names_a_bad_argument(mgr):
    with pytest.raises(TypeError, match=r"should_save_checkpoint\(iteration\).*'100'"):
        mgr.should_save_checkpoint("100")
    assert not mgr.should_save_checkpoint(-100)
