"""Copies of checkpoints keep what the original says: its timestamp, through HDF5 and Zarr too."""

from __future__ import annotations

import numpy as np
import pytest

from expstore.checkpointing import CheckpointManager, backup_checkpoint

from ..cli.test_cli import cli


@pytest.mark.parametrize("container", ["hop.h5", "hop.zarr"])
def test_a_copy_through_an_array_store_keeps_the_saved_timestamp(tmp_path, container):
    with CheckpointManager(tmp_path / "src", "exp") as m:
        ref = m.save_checkpoint({"w": np.arange(3)}, 7, {"loss": 0.5}, tag="final")
        saved = m.list_checkpoints()[0]["timestamp"]
    hop = backup_checkpoint(ref, str(tmp_path / container))
    back = backup_checkpoint(hop, str(tmp_path / "back"))
    for where in (str(tmp_path / container), str(tmp_path / "back")):
        with CheckpointManager(where, "exp") as m:
            entry = m.list_checkpoints()[0]
            loaded = m.load_checkpoint()
        assert entry["timestamp"] == saved and loaded["timestamp"] == saved, where
        assert entry["tags"] == ["final"] and loaded["metadata"] == {"loss": 0.5}
    assert back.endswith("exp_iter_000007.ckpt")


def test_cli_cp_through_zarr_keeps_timestamps(tmp_path):
    with CheckpointManager(tmp_path / "runs" / "r" / "checkpoints", "r", keep_last_n=None) as m:
        for it in (1, 2):
            m.save_checkpoint({"w": np.full(2, it)}, it)
        saved = [c["timestamp"] for c in m.list_checkpoints()]
    cli("cp", "runs", "hop.zarr", cwd=tmp_path)
    cli("cp", "hop.zarr", "back", cwd=tmp_path)
    for where in ("hop.zarr/r/checkpoints", "back/r/checkpoints"):
        with CheckpointManager(str(tmp_path / where), "r") as m:
            assert [c["timestamp"] for c in m.list_checkpoints()] == saved, where
