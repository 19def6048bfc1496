"""HDF5Store across processes: each operation opens the file (shared lock to read, exclusive to
change), so a training process, a notebook, the CLI and plain h5py share one `.h5` file; a lock
held too long is a clear `StoreError` naming the file."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from expstore import StoreError, open_store
from expstore.checkpointing import CheckpointManager

from ..workers import REPO_ROOT
from ..workers.hdf5_workers import live_state


def worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers.hdf5_workers", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )


def say(child: subprocess.Popen, line: str) -> str:
    """Send `line` to the child and return its answer."""
    child.stdin.write(line + "\n")
    child.stdin.flush()
    return child.stdout.readline()


def test_a_process_holding_a_manager_blocks_neither_other_processes_nor_plain_h5py(tmp_path):
    path = tmp_path / "live.h5"
    holder = worker("hold", str(path))
    try:
        assert holder.stdout.readline() == "holding\n"
        with h5py.File(path, "r") as f:  # HDF5's own locking: the holder has nothing locked between saves
            assert "held_iter_000001.ckpt" in f
        with CheckpointManager(path, "mine") as manager:  # this process saves while the other holds its manager
            manager.save_checkpoint(live_state(7), 7)
            assert manager.load_checkpoint()["iteration"] == 7
        with CheckpointManager(path, "held") as theirs:
            assert [c["iteration"] for c in theirs.list_checkpoints()] == [1]
        open_store(path).write("from-test", b"hello")
        assert say(holder, "save 2") == "saved 2\n"  # and the holder's next save succeeds
        assert say(holder, "") == "read hello\n"
        assert holder.stdout.readline() == "closed\n"
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()
    with CheckpointManager(path, "held") as theirs:
        assert [c["iteration"] for c in theirs.list_checkpoints()] == [1, 2]
        np.testing.assert_array_equal(theirs.load_checkpoint()["state"]["w"], live_state(2)["w"])


def test_a_reader_and_a_writer_process_both_succeed(tmp_path):
    """While another process saves 30 checkpoints, this one lists and loads them without an error,
    and every checkpoint it loads is the one its index entry names, intact."""
    path = tmp_path / "live.h5"
    saver = worker("saver", str(path), "30")
    loads = listings = 0
    try:
        assert saver.stdout.readline() == "saved 1\n"
        with CheckpointManager(path, "live", keep_last_n=5) as reader:
            while saver.poll() is None:
                listed = [c["iteration"] for c in reader.list_checkpoints()]
                listings += 1
                assert listed == sorted(listed) and len(listed) <= 6
                loaded = reader.load_checkpoint()
                iteration = loaded["iteration"]
                for name, array in live_state(iteration).items():
                    np.testing.assert_array_equal(loaded["state"][name], array)
                loads += 1
        out = saver.stdout.read()
        assert saver.wait() == 0, out
        assert out.splitlines()[-1] == "saved 30"
    finally:
        saver.kill()
        saver.wait()
    assert loads >= 3 and listings >= 3  # the reads really ran during the saves
    with CheckpointManager(path, "live", keep_last_n=5) as reader:
        assert [c["iteration"] for c in reader.list_checkpoints()] == [26, 27, 28, 29, 30]


def test_a_lock_held_past_lock_timeout_is_a_store_error_naming_the_file(tmp_path):
    path = tmp_path / "run.h5"
    store = open_store(path, lock_timeout=0.2)
    store.write("k", b"committed")
    locker = worker("h5py-lock", str(path))
    try:
        assert locker.stdout.readline() == "locked\n"
        for operation in (lambda: store.write("k", b"new"), lambda: store.read("k"), lambda: open_store(path, lock_timeout=0)):
            with pytest.raises(StoreError, match=r"stayed locked by another process") as info:
                operation()
            assert str(path) in str(info.value)
        assert say(locker, "") == "unlocked\n"
    finally:
        locker.kill()
        locker.wait()
    assert store.read("k") == b"committed"
    store.write("k", b"new")
    assert store.read("k") == b"new"
    store.close()


@pytest.mark.parametrize("bad", [-1, "30", True, float("nan")])
def test_a_bad_lock_timeout_is_refused_naming_it(tmp_path, bad):
    with pytest.raises(ValueError, match="lock_timeout"):
        open_store(tmp_path / "run.h5", lock_timeout=bad)
