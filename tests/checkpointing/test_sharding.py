"""Sharded checkpoints: N real processes save one checkpoint; kills; re-sharding 4 -> 2 and 2 -> 4."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from expstore.checkpointing import CheckpointManager, ShardedArray, backup_checkpoint, resume_from_checkpoint
from expstore.errors import CorruptData

from ..workers.sharding_workers import COLS, ROWS, global_array, rank_state, save_rank, save_then_hang

SPAWN = multiprocessing.get_context("spawn")
BACKENDS = ["local", pytest.param("seaweedfs", marks=pytest.mark.s3)]


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    """One spawn pool of 8 processes for the module: spawning costs seconds on 2 cores."""
    with SPAWN.Pool(8) as p:
        yield p


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, dict[str, Any]]:
    if request.param == "local":
        return str(tmp_path / "ckpt"), {}
    server = request.getfixturevalue(f"{request.param}_server")
    return f"s3://expstore-test/shards-{uuid.uuid4().hex[:8]}", server.storage_options


def save_all(pool: Any, location: tuple[str, dict[str, Any]], exp: str, n: int, iterations: list[int], **kw: Any) -> None:
    """Ranks 0..n-1 of one job, each in its own process, save `iterations`."""
    url, options = location
    pool.starmap(save_rank, [(url, options, exp, r, n, iterations, kw.get("keep_last_n"), kw.get("block_bytes")) for r in range(n)])


def reader(location: tuple[str, dict[str, Any]], exp: str, **kw: Any) -> CheckpointManager:
    url, options = location
    return CheckpointManager(url, exp, keep_last_n=None, **kw, **options)


def test_four_ranks_save_complete_checkpoints(pool, location):
    save_all(pool, location, "job", 4, [1, 2, 3], keep_last_n=2)
    with reader(location, "job") as m:
        assert [c["iteration"] for c in m.list_checkpoints()] == [2, 3]
        assert m.list_checkpoints()[-1]["key"] == "job_iter_000003/manifest.json"
        assert sorted(m.store.list("job_iter_000003/")) == ["job_iter_000003/manifest.json"] + [
            f"job_iter_000003/shard-{r}-of-4.ckpt" for r in range(4)
        ]
        assert m.store.list("job_iter_000001") == []  # retention removed the whole folder
        for r in range(4):
            got = m.load_checkpoint(rank=r)
            want = rank_state(3, r, 4)
            assert got["iteration"] == 3 and got["metadata"] == {"loss": 1 / 3} and got["state"]["step"] == 3
            w = got["state"]["model"]["w"]
            assert isinstance(w, ShardedArray) and (w.offset, w.global_shape) == (want["model"]["w"].offset, (ROWS, COLS))
            np.testing.assert_array_equal(w.local, want["model"]["w"].local)
            np.testing.assert_array_equal(got["state"]["rng"], [r, r])
        whole = m.load_checkpoint(world_size=1)["state"]["model"]["w"]
        np.testing.assert_array_equal(whole.local, global_array(3))
        assert m.verify() == [] and m.gc() == []


def test_eight_ranks_ten_saves_lose_nothing(pool, location):
    save_all(pool, location, "eight", 8, list(range(1, 11)))
    with reader(location, "eight") as m:
        assert [c["iteration"] for c in m.list_checkpoints()] == list(range(1, 11))
        for it in (1, 10):
            np.testing.assert_array_equal(m.load_checkpoint(f"eight_iter_{it:06d}/manifest.json", world_size=1)["state"]["model"]["w"].local, global_array(it))
        assert m.verify() == []


def test_killed_rank_leaves_no_committed_checkpoint(pool, location):
    url, options = location
    ready = SPAWN.Event()
    doomed = SPAWN.Process(target=save_then_hang, args=(url, options, "kill", 3, 4, [1, 2], 2, ready))
    doomed.start()
    try:
        pool.starmap(save_rank, [(url, options, "kill", r, 4, [1, 2]) for r in range(3)])
        assert ready.wait(60)
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join()
    assert doomed.exitcode == -signal.SIGKILL
    with reader(location, "kill", rank=1, world_size=4) as m:
        assert [c["iteration"] for c in m.list_checkpoints()] == [1]
        assert m.store.list("kill_iter_000002/") == [f"kill_iter_000002/shard-{r}-of-4.ckpt" for r in range(3)]
        loaded = m.load_checkpoint()
        assert loaded["iteration"] == 1
        np.testing.assert_array_equal(loaded["state"]["model"]["w"].local, rank_state(1, 1, 4)["model"]["w"].local)
        assert sorted(m.gc()) == [f"kill_iter_000002/shard-{r}-of-4.ckpt" for r in range(3)]
        assert m.store.list("kill_iter_000002") == []


@pytest.mark.parametrize(("saved", "loaded"), [(4, 2), (2, 4)])
def test_reshard_reads_exact_rows_by_range(pool, location, saved, loaded, monkeypatch):
    save_all(pool, location, "re", saved, [5], block_bytes=16 * 1024)
    with reader(location, "re") as m:
        reads: list[tuple[str, int, int]] = []
        store_type = type(m.store)
        plain = store_type._read_range
        monkeypatch.setattr(store_type, "_read_range", lambda self, k, s, e: reads.append((k, s, e)) or plain(self, k, s, e))
        total = sum(m.store.size(k) for k in m.store.list("re_iter_000005/shard-"))
        parts = []
        for r in range(loaded):
            reads.clear()
            got = m.load_checkpoint(rank=r, world_size=loaded)
            assert got["rank"] == r and got["world_size"] == loaded and got["iteration"] == 5
            parts.append(got["state"]["model"]["w"])
            assert got["state"]["step"] == 5
            np.testing.assert_array_equal(got["state"]["rng"], [0, 0])  # unsharded leaves come from shard 0
            fetched = sum(e - s for k, s, e in reads if "/shard-" in k)
            assert fetched < total / loaded + 4 * 16 * 1024 + 8192  # its share, block rounding and headers
        assert [p.offset for p in parts] == [ROWS * r // loaded for r in range(loaded)]
        np.testing.assert_array_equal(np.concatenate([p.local for p in parts]), global_array(5))


# ---- in one process, on the memory store ---------------------------------------------------------


def ranks(n: int, **kw: Any) -> list[CheckpointManager]:
    url = f"memory://shards-{uuid.uuid4().hex[:8]}"
    return [CheckpointManager(url, "mem", keep_last_n=None, rank=r, world_size=n, **kw) for r in range(n)]


def test_only_the_last_shard_commits():
    managers = ranks(3)
    for r, m in enumerate(managers):
        assert m.list_checkpoints() == []
        ref = m.save_checkpoint(rank_state(7, r, 3), 7)
    assert ref.endswith("/mem_iter_000007/manifest.json")
    manifest = json.loads(managers[0].store.read("mem_iter_000007/manifest.json"))
    assert [s["key"] for s in manifest["shards"]] == [f"shard-{r}-of-3.ckpt" for r in range(3)]
    assert all(s["size"] > 0 and isinstance(s["header_crc32c"], int) for s in manifest["shards"])
    assert managers[2].load_checkpoint(ref)["state"]["rng"].tolist() == [2, 2]
    selected = managers[0].load_checkpoint(select=["rng"])["state"]
    assert selected["model"] == {} and selected["rng"].tolist() == [0, 0]  # as codec select=: other arrays left out
    assert resume_from_checkpoint(ref)["state"]["rng"].tolist() == [0, 0]  # without a rank: rank 0's shard


def test_async_sharded_saves_commit():
    managers = ranks(2, async_save=True)
    for it in (1, 2):
        for r, m in enumerate(managers):
            m.save_checkpoint(rank_state(it, r, 2), it)
    for m in managers:
        m.wait_until_finished()
    assert [c["iteration"] for c in managers[0].list_checkpoints()] == [1, 2]
    np.testing.assert_array_equal(managers[1].load_checkpoint()["state"]["model"]["w"].local, rank_state(2, 1, 2)["model"]["w"].local)


def test_a_shard_rewritten_after_commit_is_detected_and_skipped():
    managers = ranks(2)
    for it in (1, 2):
        for r, m in enumerate(managers):
            m.save_checkpoint(rank_state(it, r, 2), it)
    store = managers[0].store
    other = CheckpointManager(store.url, "scratch", keep_last_n=None, rank=1, world_size=2)
    other.save_checkpoint(rank_state(9, 1, 2), 2)  # a shard of another save, copied over iteration 2's
    store.write("mem_iter_000002/shard-1-of-2.ckpt", store.read("scratch_iter_000002/shard-1-of-2.ckpt"))
    assert managers[0].verify() == [managers[0].ref_for("mem_iter_000002/manifest.json")]
    with pytest.raises(CorruptData):
        managers[1].load_checkpoint("mem_iter_000002/manifest.json")
    with pytest.warns(RuntimeWarning, match="skipping unreadable"):
        assert managers[1].load_checkpoint()["iteration"] == 1


def test_gc_removes_a_manifest_whose_index_commit_never_happened():
    managers = ranks(2)
    for r, m in enumerate(managers):
        m.save_checkpoint(rank_state(1, r, 2), 1)
    store = managers[0].store
    for name in ("manifest.json", "shard-0-of-2.ckpt", "shard-1-of-2.ckpt"):
        store.write(f"mem_iter_000002/{name}", store.read(f"mem_iter_000001/{name}"))
    assert [c["iteration"] for c in managers[0].list_checkpoints()] == [1]
    assert sorted(managers[0].gc()) == [f"mem_iter_000002/{n}" for n in ("manifest.json", "shard-0-of-2.ckpt", "shard-1-of-2.ckpt")]
    assert store.list("mem_iter_000001/") != []


def saved_pair(tag: str | None = None) -> list[CheckpointManager]:
    """Two ranks that saved iterations 1 and 2 (2 with `tag`) to one memory store."""
    managers = ranks(2)
    for it in (1, 2):
        for r, m in enumerate(managers):
            m.save_checkpoint(rank_state(it, r, 2), it, {"loss": 0.5}, tag=tag if it == 2 else None)
    return managers


@pytest.mark.parametrize("dest", ["local", "memory"])
def test_backup_of_a_sharded_checkpoint_copies_every_shard(tmp_path, dest):
    managers = saved_pair(tag="final")
    source = managers[0].store
    url = str(tmp_path / "backup") if dest == "local" else f"memory://backup-{uuid.uuid4().hex[:8]}"
    ref = backup_checkpoint(managers[0].ref_for("mem_iter_000002/manifest.json"), url)
    assert ref.endswith("/mem_iter_000002/manifest.json")
    with CheckpointManager(url, "mem", keep_last_n=None) as backup:
        (entry,) = backup.list_checkpoints()
        assert entry["iteration"] == 2 and entry["tags"] == ["final"] and entry["metadata"] == {"loss": 0.5}
        for name in ("manifest.json", "shard-0-of-2.ckpt", "shard-1-of-2.ckpt"):
            assert backup.store.read(f"mem_iter_000002/{name}") == source.read(f"mem_iter_000002/{name}")
        assert backup.verify() == []
        whole = backup.load_checkpoint(world_size=1, rank=0)["state"]["model"]["w"]
        np.testing.assert_array_equal(whole.local, global_array(2))


@pytest.mark.parametrize("container", ["run.h5", "run.zarr"])
def test_backup_of_a_sharded_checkpoint_into_an_array_store_saves_the_whole_state(tmp_path, container):
    pytest.importorskip("h5py" if container.endswith(".h5") else "zarr")
    managers = saved_pair(tag="final")
    url = str(tmp_path / container / "ckpt")
    backup_checkpoint(managers[0].ref_for("mem_iter_000002/manifest.json"), url)
    with CheckpointManager(url, "mem", keep_last_n=None) as backup:
        (entry,) = backup.list_checkpoints()
        assert entry["iteration"] == 2 and entry["tags"] == ["final"]
        loaded = backup.load_checkpoint()
        np.testing.assert_array_equal(loaded["state"]["model"]["w"], global_array(2))
        assert loaded["state"]["step"] == 2 and loaded["metadata"] == {"loss": 0.5}


def test_backup_of_a_damaged_sharded_checkpoint_commits_nothing(tmp_path):
    managers = saved_pair()
    store = managers[0].store
    shard = bytearray(store.read("mem_iter_000002/shard-1-of-2.ckpt"))
    shard[-3] ^= 0xFF  # an array byte: the header still matches the manifest, the array crc32c does not
    store.write("mem_iter_000002/shard-1-of-2.ckpt", bytes(shard))
    url = str(tmp_path / "backup")
    backup_checkpoint(managers[0].ref_for("mem_iter_000001/manifest.json"), url)
    with pytest.raises(CorruptData, match="shard-1-of-2"):
        backup_checkpoint(managers[0].ref_for("mem_iter_000002/manifest.json"), url)
    with CheckpointManager(url, "mem", keep_last_n=None) as backup:
        assert [c["iteration"] for c in backup.list_checkpoints()] == [1]
        assert not backup.store.exists("mem_iter_000002/manifest.json")


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        CheckpointManager("memory://x", "e", rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        CheckpointManager("memory://x", "e", rank=0)
    with pytest.raises(ValueError, match="does not fit"):
        ShardedArray(np.zeros((3, 2)), (2, 2), 0)
    with pytest.raises(ValueError, match="does not fit"):
        ShardedArray(np.zeros((3, 2)), (9, 3), 0)
    with pytest.raises(TypeError):
        ShardedArray(np.zeros(()), (1,), 0)


def test_sharding_needs_a_bytes_store(tmp_path):
    with pytest.raises(TypeError, match="bytes store"):
        CheckpointManager(str(tmp_path / "run.zarr"), "e", rank=0, world_size=2)
