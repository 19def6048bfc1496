"""HDF5Store integrity: every tree array's crc32c, checked on read; damaged and truncated files
reported as `CorruptData` naming the array or the file, through the store, the checkpoint manager
and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from expstore import CorruptData, open_store
from expstore.checkpointing import CheckpointManager
from expstore.format.checksum import CRC32C_ATTRIBUTE, array_crc32c

from ..workers import REPO_ROOT


def state(iteration: int) -> dict:
    rng = np.random.default_rng(iteration)
    return {"model": {"w": rng.random((2600, 100)), "b": np.arange(7.0) + iteration}, "step": iteration}


def save_three(path: Path) -> None:
    with CheckpointManager(path, "exp", keep_last_n=3) as manager:
        for iteration in (1, 2, 3):
            manager.save_checkpoint(state(iteration), iteration)


def overwrite_inside(path: Path, dataset: str, data: bytes = b"\xde\xad\xbe\xef" * 2) -> None:
    """Overwrite bytes in the middle of `dataset`'s first chunk, as bit rot would, with h5py closed."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        offset = ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()
        offset += ds.id.get_storage_size() // 2 if not ds.chunks else ds.id.get_chunk_info(0).size // 2
    with open(path, "r+b") as raw:
        raw.seek(offset)
        raw.write(data)


def test_each_tree_array_carries_its_crc32c_beside_the_dataset(tmp_path):
    path = tmp_path / "run.h5"
    tree = {"w": np.arange(12.0).reshape(3, 4).T, "s": np.array(3), "e": np.empty(0), "n": {"x": np.ones(5, ">i4")}}
    with open_store(path) as store:
        store.write_tree("t", tree)
    with h5py.File(path, "r") as f:
        for name, array in (("w", tree["w"]), ("s", tree["s"]), ("e", tree["e"]), ("n/x", tree["n"]["x"])):
            assert int(f[f"t/{name}"].attrs[CRC32C_ATTRIBUTE]) == array_crc32c(array), name


def test_eight_overwritten_bytes_name_the_array_and_the_key(tmp_path):
    path = tmp_path / "run.h5"
    with open_store(path) as store:
        store.write_tree("ckpt/t", {"model": {"w": np.arange(100_000.0), "b": np.ones(3)}})
    overwrite_inside(path, "ckpt/t/model/w")
    with open_store(path) as store:
        with pytest.raises(CorruptData, match=r"'model/w'") as info:
            store.read_tree("ckpt/t")
        assert "ckpt/t" in str(info.value) and str(path) in str(info.value)
        np.testing.assert_array_equal(store.read_tree("ckpt/t", select=["model/b"])["model"]["b"], np.ones(3))


def test_a_tree_written_without_checksums_still_reads(tmp_path):
    """Trees from an expstore that kept no crc32c attribute load as before."""
    path = tmp_path / "run.h5"
    with open_store(path) as store:
        store.write_tree("t", {"w": np.arange(10.0), "s": "x"})
    with h5py.File(path, "r+") as f:
        del f["t/w"].attrs[CRC32C_ATTRIBUTE]
    with open_store(path) as store:
        back = store.read_tree("t")
    np.testing.assert_array_equal(back["w"], np.arange(10.0))
    assert back["s"] == "x"


def test_verify_names_a_damaged_checkpoint_and_load_falls_back_to_the_previous(tmp_path):
    path = tmp_path / "run.h5"
    save_three(path)
    overwrite_inside(path, "exp_iter_000003.ckpt/state/model/w")
    with CheckpointManager(path, "exp", keep_last_n=3) as manager:
        bad = manager.verify()
        assert len(bad) == 1 and "exp_iter_000003.ckpt" in bad[0]
        with pytest.warns(RuntimeWarning, match=r"exp_iter_000003\.ckpt.*'state/model/w'"):
            loaded = manager.load_checkpoint()
        assert loaded["iteration"] == 2
        np.testing.assert_array_equal(loaded["state"]["model"]["w"], state(2)["model"]["w"])


def test_a_truncated_file_is_corrupt_data_naming_the_file_everywhere(tmp_path):
    """A 6 MB file of three checkpoints cut at 68 %: HDF5 keeps the metadata the last commit wrote
    near the end of the file, so nothing is reachable; every entry point says so, naming the file."""
    path = tmp_path / "run.h5"
    save_three(path)
    open_before = open_store(path)
    manager_before = CheckpointManager(path, "exp")
    size = path.stat().st_size
    assert size > 6_000_000
    os.truncate(path, int(size * 0.68))
    checks = {
        "open_store": lambda: open_store(path),
        "read_tree": lambda: open_before.read_tree("exp_iter_000001.ckpt"),
        "list": lambda: open_before.list(),
        "CheckpointManager": lambda: CheckpointManager(path, "exp"),
        "load_checkpoint": lambda: manager_before.load_checkpoint(),
        "verify": lambda: manager_before.verify(),
    }
    for name, call in checks.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fallback warning per checkpoint would hide the cause
            with pytest.raises(CorruptData, match="truncated file") as info:
                call()
        assert str(path) in str(info.value), name
    assert path.stat().st_size == int(size * 0.68)  # nothing was written to the damaged file
    assert not os.path.exists(f"{path}.journal")


def test_the_cli_reports_a_truncated_file_without_a_traceback(tmp_path):
    path = tmp_path / "run.h5"
    save_three(path)
    os.truncate(path, int(path.stat().st_size * 0.68))
    done = subprocess.run(
        [sys.executable, "-m", "expstore", "verify", str(path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "truncated file" in done.stderr + done.stdout
    assert str(path) in done.stderr + done.stdout


@pytest.mark.parametrize("signature", [b"OHDR", b"TREE"])
def test_damaged_hdf5_metadata_is_corrupt_data_naming_the_file(tmp_path, signature):
    """Bytes overwritten in an object header or a B-tree: h5py's KeyError / OSError becomes
    `CorruptData` naming the file and the key."""
    path = tmp_path / "run.h5"
    with open_store(path) as store:
        store.write_tree("ckpt", {"w": np.arange(100_000.0), "step": 3})
    raw = bytearray(path.read_bytes())
    offset = raw.find(signature)
    assert offset > 0
    raw[offset + 2 : offset + 6] = b"XXXX"
    path.write_bytes(bytes(raw))
    with open_store(path) as store:
        with pytest.raises(CorruptData, match="HDF5 cannot read") as info:
            store.read_tree("ckpt")
    assert str(path) in str(info.value) and "ckpt" in str(info.value)
