"""`jax.Array` leaves: stored as the numpy arrays they hold (bfloat16 too, as an ml_dtypes array), loaded as numpy."""

from __future__ import annotations

import numpy as np
import pytest

from expstore.checkpointing import CheckpointManager

jnp = pytest.importorskip("jax.numpy")


def test_jax_arrays_round_trip_as_numpy(tmp_path):
    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3, dtype=jnp.bfloat16)}, "step": jnp.int32(4)}
    with CheckpointManager(tmp_path, "e") as manager:
        manager.save_checkpoint(state, 1)
        back = manager.load_checkpoint()["state"]
    assert isinstance(back["params"]["w"], np.ndarray) and np.array_equal(back["params"]["w"], np.asarray(state["params"]["w"]))
    assert back["params"]["b"].dtype == jnp.bfloat16 and np.asarray(back["params"]["b"]).tobytes() == np.asarray(state["params"]["b"]).tobytes()
    assert int(back["step"]) == 4
    assert np.array_equal(jnp.asarray(back["params"]["w"]), state["params"]["w"])  # back to jax in one call
