"""expstore.checkpointing: the CheckpointManager on every store, retention, fallback, races."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
import uuid
import warnings
from typing import Any

import numpy as np
import pytest

from expstore.backends.memory import MemoryStore
from expstore.checkpointing import (
    AutoCheckpoint,
    CheckpointManager,
    backup_checkpoint,
    create_checkpoint_manager,
    resume_from_checkpoint,
)
from expstore.errors import CorruptData, InvalidKey, StoreError
from expstore.format.checkpoint import PickleNotAllowed, write_checkpoint

from ..conftest import FACADE_BACKENDS
from ..trees import assert_same
from ..workers import REPO_ROOT
from ..workers.checkpoint_workers import save_iterations
from ..wrapping import DelegatingStore

STORE_BACKENDS = FACADE_BACKENDS


_OPEN: list[CheckpointManager] = []


@pytest.fixture(autouse=True)
def _close_managers():
    yield
    while _OPEN:
        try:
            _OPEN.pop().close()
        except Exception:  # noqa: BLE001 - a test may have left a failed async save behind on purpose
            pass


def manager(location: tuple[str, dict[str, Any]], name: str = "exp", **kwargs: Any) -> CheckpointManager:
    url, options = location
    _OPEN.append(CheckpointManager(url, name, **kwargs, **options))
    return _OPEN[-1]


def small(i: int) -> dict[str, Any]:
    return {"w": np.full(3, i, np.int64), "step": i}


def iterations(m: CheckpointManager) -> list[int]:
    return [c["iteration"] for c in m.list_checkpoints()]


# ---- the basic behaviour, on every backend -----------------------------------------------------


def test_rolling_keep_last_3_over_1000_iterations(store_location):
    url, options = store_location
    m = create_checkpoint_manager("exp", url, keep_last_n=3, save_frequency=100, **options)
    _OPEN.append(m)
    for i in range(1, 1001):
        if m.should_save_checkpoint(i):
            m.save_checkpoint(small(i), i, {"loss": 1.0 / i})
    listed = m.list_checkpoints()
    assert [c["iteration"] for c in listed] == [800, 900, 1000]
    assert sorted(k for k in m.store.list("exp_iter_")) == [
        "exp_iter_000800.ckpt", "exp_iter_000900.ckpt", "exp_iter_001000.ckpt"
    ]
    for c in listed:  # every entry is accepted by load_checkpoint, as entry and as ref
        assert m.load_checkpoint(c)["iteration"] == c["iteration"]
        assert m.load_checkpoint(c["path"])["metadata"] == {"loss": 1.0 / c["iteration"]}
    latest = m.load_checkpoint()
    assert latest["iteration"] == 1000 and latest["state"]["step"] == 1000
    np.testing.assert_array_equal(latest["state"]["w"], [1000] * 3)


def test_should_save_checkpoint_semantics_of_the_src_module(tmp_path):
    m = CheckpointManager(tmp_path, "exp", save_frequency=100)
    assert [i for i in range(0, 301) if m.should_save_checkpoint(i)] == [100, 200, 300]


def test_rich_state_round_trips_exactly(store_location):
    rng_state = np.random.default_rng(0).bit_generator.state
    state = {
        "model": {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(0, np.int16), "s": np.array(7.5)},
        "opt": [1, (2, "three"), {"lr": 1e-3}],
        "big": 2**100,
        "neg_big": -(2**70),
        "nan": float("nan"),
        "inf": float("-inf"),
        "flag": True,
        "none": None,
        "blob": b"\x00\xff",
        "np_scalars": (np.float16(1.5), np.int64(-3), np.uint8(200), np.bool_(True)),
        "rng": rng_state,
    }
    m = manager(store_location)
    ref = m.save_checkpoint(state, 5, {"note": "rich", "loss": 0.25})
    loaded = m.load_checkpoint(ref)
    assert loaded["iteration"] == 5 and loaded["metadata"] == {"note": "rich", "loss": 0.25}
    assert isinstance(loaded["timestamp"], str) and loaded["timestamp"].endswith("+00:00")
    assert_same(loaded["state"], state)
    gen = np.random.default_rng()
    gen.bit_generator.state = loaded["state"]["rng"]  # the restored generator continues the same stream
    assert gen.random() == np.random.default_rng(0).random()
    part = m.load_checkpoint(ref, select=["model/w"])["state"]
    np.testing.assert_array_equal(part["model"]["w"], state["model"]["w"])
    assert "b" not in part["model"]  # arrays not selected are not read


def test_latest_goes_by_iteration_not_save_order(store_location):
    m = manager(store_location)
    m.save_checkpoint(small(300), 300)
    m.save_checkpoint(small(100), 100)
    assert iterations(m) == [100, 300]
    assert m.load_checkpoint()["iteration"] == 300


def test_saving_an_existing_iteration_replaces_it(store_location):
    m = manager(store_location)
    m.save_checkpoint(small(1), 100, {"v": 1})
    ref = m.save_checkpoint(small(2), 100, {"v": 2})
    assert iterations(m) == [100]
    loaded = m.load_checkpoint(ref)
    assert loaded["metadata"] == {"v": 2} and loaded["state"]["step"] == 2
    assert m.list_checkpoints()[0]["metadata"] == {"v": 2}


def test_tagged_checkpoint_survives_retention(store_location):
    m = manager(store_location, keep_last_n=2)
    m.save_checkpoint(small(100), 100, tag="at_threshold")
    for i in (200, 300, 400):
        m.save_checkpoint(small(i), i)
    listed = m.list_checkpoints()
    assert [c["iteration"] for c in listed] == [100, 300, 400]
    assert listed[0]["tags"] == ["at_threshold"]
    assert m.load_checkpoint(listed[0])["state"]["step"] == 100


def test_keep_best_n_by_metric(store_location):
    losses = {100: 0.9, 200: 0.1, 300: 0.5, 400: 0.2, 500: 0.8, 600: 0.7}
    m = manager(store_location, keep_last_n=1, keep_best_n=2, metric="loss", mode="min")
    for i, loss in losses.items():
        m.save_checkpoint(small(i), i, {"loss": loss})
    m.save_checkpoint(small(700), 700, {"acc": 0.3})  # without the metric: no candidate, kept as newest
    assert iterations(m) == [200, 400, 700]
    mx = manager(store_location, name="exp_max", keep_last_n=1, keep_best_n=1, metric="acc", mode="max")
    for i, acc in {1: 0.5, 2: 0.9, 3: 0.1, 4: 0.2}.items():
        mx.save_checkpoint(small(i), i, {"acc": acc})
    assert iterations(mx) == [2, 4]


def test_corrupt_latest_falls_back_with_warning(store_location):
    m = manager(store_location, keep_last_n=None)
    for i in (100, 200, 300):
        m.save_checkpoint(small(i), i)
    bad_key = m.key_for(300)
    if m.store.supports_arrays:  # a tree has no bytes to flip: lose the object behind the index instead
        m.store.delete(bad_key)
    else:
        data = bytearray(m.store.read(bad_key))
        data[-1] ^= 0xFF  # last byte of the array data: fails its crc32c
        m.store.write(bad_key, bytes(data))
        with pytest.raises(CorruptData):
            m.load_checkpoint(bad_key)
    with pytest.warns(RuntimeWarning, match="exp_iter_000300"):
        loaded = m.load_checkpoint()
    assert loaded["iteration"] == 200
    assert m.verify() == [m.ref_for(bad_key)]


def test_no_checkpoint_raises_file_not_found(store_location):
    m = manager(store_location)
    with pytest.raises(FileNotFoundError):
        m.load_checkpoint()
    assert m.list_checkpoints() == [] and m.verify() == []


def test_unpicklable_leaf_names_its_path_and_writes_nothing(store_location):
    m = manager(store_location)
    with pytest.raises(TypeError, match="fn"):
        m.save_checkpoint({"optimizer": {"lr": 0.1, "fn": lambda x: x}}, 100)
    assert m.store.list("exp") == []
    assert m.list_checkpoints() == []


def test_metadata_must_be_json(store_location):
    m = manager(store_location)
    with pytest.raises(TypeError, match="loss"):
        m.save_checkpoint(small(1), 1, {"loss": np.float32(0.5)})
    assert m.store.list("exp") == []


def test_gc_removes_objects_the_index_does_not_name(store_location):
    m = manager(store_location)
    m.save_checkpoint(small(100), 100)
    orphan = m.key_for(500)  # as a crash between object write and index commit leaves it
    if m.store.supports_arrays:
        m.store.write_tree(orphan, {"iteration": 500, "state": small(500)})
    else:
        write_checkpoint(m.store, orphan, small(500), extra={"iteration": 500})
    assert m.load_checkpoint()["iteration"] == 100  # readers do not see it
    assert m.gc() == [orphan]
    assert m.store.list("exp_iter_") == [m.key_for(100)]
    assert m.gc() == []


def test_resume_from_ref_and_from_directory(store_location):
    url, options = store_location
    m = manager(store_location, keep_last_n=None)
    ref100 = m.save_checkpoint(small(100), 100, {"loss": 1.0})
    m.save_checkpoint(small(200), 200)
    loaded = resume_from_checkpoint(ref100, **options)
    assert loaded["iteration"] == 100 and loaded["metadata"] == {"loss": 1.0} and loaded["state"]["step"] == 100
    assert resume_from_checkpoint(url, **options)["iteration"] == 200


# ---- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_keep_last_n_must_be_positive_int(tmp_path, bad):
    with pytest.raises(ValueError, match="keep_last_n"):
        CheckpointManager(tmp_path, "exp", keep_last_n=bad)


def test_keep_last_n_none_keeps_all(tmp_path):
    m = CheckpointManager(tmp_path, "exp", keep_last_n=None)
    for i in range(1, 8):
        m.save_checkpoint(small(i), i)
    assert iterations(m) == list(range(1, 8))


@pytest.mark.parametrize("bad", ["", "a/b", "a\\b", "..", "x..y", "nul\x00", "tab\t", "../up"])
def test_bad_experiment_names(tmp_path, bad):
    with pytest.raises(InvalidKey) as info:
        CheckpointManager(tmp_path, bad)
    assert repr(bad) in str(info.value)


def test_corrupt_index_raises_corrupt_data_naming_it(tmp_path):
    m = CheckpointManager(tmp_path, "exp")
    m.save_checkpoint(small(1), 1)
    m.store.write("exp_index.json", b"{not json")
    with pytest.raises(CorruptData, match="exp_index.json"):
        m.list_checkpoints()


def test_load_sees_every_change_another_writer_makes_to_the_index(store_location):
    """A reader loading the latest again and again (it may reuse the parsed index while the index
    is unchanged) must see each new save, a deletion and a damaged index at once."""
    reader, writer = manager(store_location, keep_last_n=None), manager(store_location, keep_last_n=None)
    writer.save_checkpoint(small(1), 1)
    assert reader.load_checkpoint()["iteration"] == 1
    assert reader.load_checkpoint()["iteration"] == 1
    writer.save_checkpoint(small(2), 2)
    assert reader.load_checkpoint()["iteration"] == 2
    writer.save_checkpoint(small(1), 1)  # an older iteration replaced: the latest stays 2
    assert reader.load_checkpoint()["iteration"] == 2
    writer.store.delete(writer.index_key)
    with pytest.raises(FileNotFoundError):
        reader.load_checkpoint()
    writer.save_checkpoint(small(3), 3)
    assert reader.load_checkpoint()["iteration"] == 3
    writer.store.write(writer.index_key, b"{not json")
    with pytest.raises(CorruptData, match="index"):
        reader.load_checkpoint()


def test_allow_pickle_round_trip_on_bytes_store_and_refused_on_array_store(tmp_path):
    m = CheckpointManager(tmp_path / "d", "exp", allow_pickle=True)
    ref = m.save_checkpoint({"obj": {1, 2, 3}}, 1)
    assert m.load_checkpoint(ref)["state"]["obj"] == {1, 2, 3}
    with pytest.raises(PickleNotAllowed, match="allow_pickle"):  # never unpickled without opt-in
        CheckpointManager(tmp_path / "d", "exp").load_checkpoint(ref)
    with pytest.raises(TypeError, match="array-native"):
        CheckpointManager(tmp_path / "run.h5", "exp", allow_pickle=True)


def test_old_iteration_below_the_window_is_not_kept(tmp_path):
    m = CheckpointManager(tmp_path, "exp", keep_last_n=2)
    for i in (300, 400):
        m.save_checkpoint(small(i), i)
    m.save_checkpoint(small(100), 100)
    assert iterations(m) == [300, 400]
    assert m.store.list("exp_iter_") == [m.key_for(300), m.key_for(400)]


def test_resumed_checkpoint_is_protected_from_retention(tmp_path):
    m = CheckpointManager(tmp_path, "exp", keep_last_n=None)
    for i in (100, 200, 900):
        m.save_checkpoint(small(i), i)
    run = CheckpointManager(tmp_path, "exp", keep_last_n=2)
    assert run.load_checkpoint(m.key_for(200))["iteration"] == 200
    run.save_checkpoint(small(210), 210)
    run.save_checkpoint(small(220), 220)
    assert iterations(run) == [200, 220, 900]


# ---- backup ----------------------------------------------------------------------------------------


def test_backup_local_to_memory_and_hdf5(tmp_path):
    m = CheckpointManager(tmp_path / "src", "exp")
    ref = m.save_checkpoint({"w": np.arange(5.0), "t": (1, 2)}, 100, {"loss": 0.5}, tag="final")
    for dest in (f"memory://backup-{uuid.uuid4().hex[:8]}", str(tmp_path / "b.h5")):
        new_ref = backup_checkpoint(ref, dest)
        assert new_ref == f"{dest}/exp_iter_000100.ckpt"
        loaded = resume_from_checkpoint(new_ref)
        assert loaded["iteration"] == 100 and loaded["metadata"] == {"loss": 0.5}
        assert_same(loaded["state"], {"w": np.arange(5.0), "t": (1, 2)})
        backed = CheckpointManager(dest, "exp")
        assert [(c["iteration"], c["tags"]) for c in backed.list_checkpoints()] == [(100, ["final"])]


def test_backup_of_a_checkpoint_with_a_damaged_array_copies_nothing(tmp_path):
    """A byte flipped inside an array (header intact) is caught before the copy, not after it."""
    m = CheckpointManager(tmp_path / "src", "exp")
    ref = m.save_checkpoint({"w": np.arange(1000.0)}, 100)
    path = tmp_path / "src" / "exp_iter_000100.ckpt"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match="checksum mismatch"):
        backup_checkpoint(ref, str(tmp_path / "dest"))
    dest = CheckpointManager(tmp_path / "dest", "exp")
    assert dest.list_checkpoints() == [] and not dest.store.exists("exp_iter_000100.ckpt")


@pytest.mark.s3
def test_backup_local_to_s3_and_back(tmp_path, moto_server):
    m = CheckpointManager(tmp_path / "src", "exp")
    ref = m.save_checkpoint(small(7), 7, {"loss": 0.1})
    s3_url = f"s3://expstore-test/backup-{uuid.uuid4().hex[:8]}"
    s3_ref = backup_checkpoint(ref, s3_url, **moto_server.storage_options)
    assert s3_ref == f"{s3_url}/exp_iter_000007.ckpt"
    assert resume_from_checkpoint(s3_url, **moto_server.storage_options)["state"]["step"] == 7
    with CheckpointManager(s3_url, "exp", **moto_server.storage_options) as s3:
        assert [c["path"] for c in s3.list_checkpoints()] == [s3_ref]
    back = str(tmp_path / "back")
    local_ref = backup_checkpoint(s3_ref, back, source_options=moto_server.storage_options)
    assert local_ref == f"{back}/exp_iter_000007.ckpt"
    assert resume_from_checkpoint(local_ref)["metadata"] == {"loss": 0.1}


# ---- racing writers --------------------------------------------------------------------------------


def _race(url: str, options: dict[str, Any]) -> None:
    jobs = [(url, options, "race", [w * 100 + k for k in range(1, 5)]) for w in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        refs = pool.starmap(save_iterations, jobs)
    expected = sorted(it for job in jobs for it in job[3])
    m = CheckpointManager(url, "race", keep_last_n=None, **options)
    _OPEN.append(m)
    assert iterations(m) == expected
    assert sorted(c["path"] for c in m.list_checkpoints()) == sorted(r for rs in refs for r in rs)
    assert m.verify() == []
    assert m.gc() == []


def test_racing_savers_local(tmp_path):
    _race(str(tmp_path / "race"), {})


@pytest.mark.s3
def test_racing_savers_s3(seaweedfs_server):
    # SeaweedFS, not moto: moto's conditional PUT checks and stores without a lock (docs/decisions.md)
    _race(f"s3://expstore-test/race-{uuid.uuid4().hex[:8]}", seaweedfs_server.storage_options)


# ---- AutoCheckpoint and async save ---------------------------------------------------------------


def test_auto_checkpoint_saves_on_exception(store_location):
    m = manager(store_location)
    progress = {"i": 0}
    with pytest.raises(ZeroDivisionError):
        with AutoCheckpoint(m, lambda: (small(progress["i"]), progress["i"], {"loss": 0.5})):
            progress["i"] = 42
            1 / 0
    loaded = m.load_checkpoint()
    assert loaded["iteration"] == 42 and loaded["state"]["step"] == 42
    assert loaded["metadata"] == {"loss": 0.5, "reason": "exception: ZeroDivisionError"}


def test_auto_checkpoint_saves_nothing_on_clean_exit(tmp_path):
    m = CheckpointManager(tmp_path, "exp")
    with AutoCheckpoint(m, lambda: (small(1), 1)):
        pass
    assert m.list_checkpoints() == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_auto_checkpoint_saves_on_preemption_signal(tmp_path, signum):
    url = str(tmp_path / "ckpt")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.checkpoint_workers", url, "exp"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.2)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if signum == signal.SIGTERM:
        assert proc.returncode == 143, err.decode()
    else:
        assert proc.returncode != 0 and b"KeyboardInterrupt" in err
    loaded = CheckpointManager(url, "exp").load_checkpoint()
    assert loaded["iteration"] > 0
    assert loaded["metadata"]["reason"] == f"signal: {signal.Signals(signum).name}"
    np.testing.assert_array_equal(loaded["state"]["w"], [loaded["iteration"]] * 2)


def test_async_save_copies_state_and_commits(store_location):
    m = manager(store_location, keep_last_n=None)
    state = {"w": np.zeros(4)}
    ref = m.save_checkpoint(state, 1, blocking=False)
    state["w"][:] = 9  # the caller may change its arrays right away: the save holds a copy
    m.wait_until_finished()
    np.testing.assert_array_equal(m.load_checkpoint(ref)["state"]["w"], np.zeros(4))
    a = manager(store_location, "asy", async_save=True)
    a.save_checkpoint(small(1), 1)
    a.save_checkpoint(small(2), 2)  # waits for the first
    assert iterations(a) == [1, 2]  # list waits for the pending save


def test_async_saves_reusing_host_buffers_keep_each_state(tmp_path):
    """Async saves copy arrays into buffers reused from save to save: each save keeps its own values,
    also for an array shared twice in the tree, non-contiguous views and lists."""
    m = CheckpointManager(tmp_path, "exp", keep_last_n=None, async_save=True)
    shared = np.zeros(6)
    state = {"a": shared, "b": shared, "l": [np.zeros(3), np.zeros(3)], "view": np.zeros((4, 4))[:, 1], "n": 0}
    for i in range(1, 4):
        shared[:] = i
        state["l"][0][:], state["l"][1][:] = i, -i
        state["view"].base[:, 1] = 10 * i
        state["n"] = i
        m.save_checkpoint(state, i)
        shared[:] = 99  # the caller changes everything right after the call returns
        state["l"][0][:] = state["l"][1][:] = 99
    for i in range(1, 4):
        got = m.load_checkpoint(m.ref_for(m.key_for(i)))["state"]
        np.testing.assert_array_equal(got["a"], np.full(6, i))
        np.testing.assert_array_equal(got["b"], np.full(6, i))
        np.testing.assert_array_equal(got["l"][0], np.full(3, i))
        np.testing.assert_array_equal(got["l"][1], np.full(3, -i))
        np.testing.assert_array_equal(got["view"], np.full(4, 10 * i))
        assert got["n"] == i
    m.close()


def test_interpreter_exit_waits_for_the_pending_save_and_retention(tmp_path):
    """A script that ends right after an async save (and a save whose retention deletes are still
    running) leaves both committed and the dropped checkpoint gone: exit waits for the threads."""
    code = (
        "import sys, numpy as np\n"
        "from expstore.checkpointing import CheckpointManager\n"
        "m = CheckpointManager(sys.argv[1], 'exp', keep_last_n=1)\n"
        "m.save_checkpoint({'w': np.full(2**21, 1.0)}, 1)\n"
        "m.save_checkpoint({'w': np.full(2**21, 2.0)}, 2)  # retention drops 1 behind the caller\n"
        "m.save_checkpoint({'w': np.full(2**21, 3.0)}, 3, blocking=False)  # then the script ends\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    m = CheckpointManager(tmp_path, "exp", keep_last_n=1)
    assert iterations(m) == [3]
    assert sorted(k for k in m.store.list() if k.endswith(".ckpt")) == [m.key_for(3)]
    np.testing.assert_array_equal(m.load_checkpoint()["state"]["w"], np.full(2**21, 3.0))
    m.close()


def test_retention_deletes_run_behind_the_caller_and_never_hit_a_later_save(tmp_path):
    m = CheckpointManager(tmp_path, "exp", keep_last_n=2)
    for i in (1, 2, 3):
        m.save_checkpoint(small(i), i)  # saving 3 drops 1: its delete runs after the call returns
    m.save_checkpoint(small(10), 1, tag="final")  # re-saves the dropped iteration right away, pinned
    m.wait_until_finished()
    assert iterations(m) == [1, 2, 3]
    assert sorted(k for k in m.store.list() if k.endswith(".ckpt")) == [m.key_for(i) for i in (1, 2, 3)]
    np.testing.assert_array_equal(m.load_checkpoint(m.key_for(1))["state"]["w"], np.full(3, 10))
    m.close()


class _FailingWrites(DelegatingStore):
    """Checkpoint writes fail while `failing` is set, as on a full disk."""

    failing = True

    def _write(self, key, data, if_absent, if_match):
        if self.failing and key.endswith(".ckpt"):
            raise StoreError("no space left on device", url=self.url, key=key)
        return super()._write(key, data, if_absent, if_match)


def test_async_save_error_is_raised_on_next_call():
    store = _FailingWrites(MemoryStore(f"memory://{uuid.uuid4().hex}"))
    m = CheckpointManager(store, "exp", async_save=True)
    m.save_checkpoint(small(1), 1)  # returns at once; the background save fails
    with pytest.raises(StoreError, match="no space left"):
        m.save_checkpoint(small(2), 2)
    assert m.list_checkpoints() == []  # the failed save is reported once, the call after proceeds
    store.failing = False
    m.save_checkpoint(small(3), 3)
    m.wait_until_finished()
    assert iterations(m) == [3]
    store.failing = True
    m.save_checkpoint(small(4), 4)
    with pytest.raises(StoreError):
        m.close()


def test_async_save_refuses_a_leaf_that_needs_pickle_at_the_call(tmp_path):
    with CheckpointManager(tmp_path, "exp", async_save=True) as m:
        with pytest.raises(TypeError, match=r"state\['fn'\]: cannot store a function"):
            m.save_checkpoint({"fn": lambda: 0}, 1)
        assert m.list_checkpoints() == []


# ---- hypothesis: random trees through the manager on the array-native and S3 stores ------------

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402

from ..format.test_codec import trees  # noqa: E402


def _dtype_kinds(tree: Any) -> set[str]:
    if isinstance(tree, np.ndarray):
        return {tree.dtype.kind}
    children = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return set().union(*(_dtype_kinds(c) for c in children))


@pytest.mark.parametrize("store_location", ["hdf5-memory", "zarr-memory", "s3-moto"], indirect=True)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
def test_random_trees_round_trip_through_the_manager(store_location, tree):
    url, options = store_location
    if url.startswith("h5"):  # HDF5 has no unicode, datetime64 or timedelta64 type: TypeError, tested in test_hdf5
        assume(not _dtype_kinds(tree) & set("UMm"))
    with CheckpointManager(url, "hyp", keep_last_n=1, **options) as m:
        m.save_checkpoint({"t": tree}, 1)
        assert_same({"t": tree}, m.load_checkpoint()["state"])


class _PrunedWhileReading(MemoryStore):
    """A memory store that, when a checkpoint is first read, lets another writer save `saves` more
    (its retention then deletes the one being read), as a reader starved of the file's lock sees."""

    def __init__(self) -> None:
        super().__init__(f"pruned-{uuid.uuid4().hex[:8]}")
        self.before_first_checkpoint_read: Any = None

    def _before(self, key: str) -> None:
        hook = self.before_first_checkpoint_read
        if hook is not None and ".ckpt" in key:
            self.before_first_checkpoint_read = None
            hook()

    def _read(self, key: str) -> bytes:
        self._before(key)
        return super()._read(key)

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        self._before(key)
        return super()._read_range(key, start, end)


def test_a_checkpoint_pruned_by_another_writer_while_loading_is_no_failure():
    """The reader read an index whose every entry another writer's retention deleted before the
    reader got to it: the load starts again from the new index, silently, and gets its newest."""
    store = _PrunedWhileReading()
    writer, reader = CheckpointManager(store, "exp", keep_last_n=2), CheckpointManager(store, "exp", keep_last_n=2)
    for i in (1, 2):
        writer.save_checkpoint(small(i), i)
    store.before_first_checkpoint_read = lambda: [writer.save_checkpoint(small(i), i) for i in (3, 4, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = reader.load_checkpoint()
    assert loaded["iteration"] == 5
    assert_same(loaded["state"], small(5))
