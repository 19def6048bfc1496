"""Zarr backend: the layout plain zarr sees, crash safety under SIGKILL, orphans, bad roots, codecs.

The protocol itself runs in tests/conformance (params zarr-local, zarr-memory, zarr-s3-*).
Subprocesses are started with `subprocess` (never fork): zarr keeps an event loop thread.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from expstore import CorruptData, KeyNotFound, PreconditionFailed, open_store  # noqa: E402
from expstore.backends.zarr import local as zarr_local

from ..workers import REPO_ROOT
from ..workers.zarr_workers import expected_tree, tree_problem  # noqa: E402


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers.zarr_workers", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _children(root: Path, key: str) -> list[str]:
    return sorted(p.name for p in root.joinpath(*key.split("/")).iterdir() if p.name.startswith("v-"))


def test_plain_zarr_opens_the_arrays_a_tree_wrote(tmp_path):
    path = tmp_path / "run.zarr"
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    big_endian = np.arange(5, dtype=">i4")
    with open_store(path) as store:
        token = store.write_tree("ckpt/state", {"model": {"w": w, "b": big_endian}, "step": 7, "scalar": np.array(2.5)})
        store.write("notes", b"hello")

    group = zarr.open_group(path, mode="r")
    # Node path of a tree array: <key>/v-<version token>/<array path in the tree>, where the version
    # token is what write_tree returned; the key's group attributes name it as expstore.live.
    assert group["ckpt/state"].attrs["expstore"]["live"] == token
    node = group[f"ckpt/state/v-{token}/model/w"]
    assert isinstance(node, zarr.Array)
    assert node.dtype == np.float32 and node.shape == (3, 4)
    np.testing.assert_array_equal(node[...], w)
    stored_b = group[f"ckpt/state/v-{token}/model/b"]
    assert stored_b.shape == (5,)
    np.testing.assert_array_equal(stored_b[...], big_endian)  # zarr reads it back little-endian, same values
    assert group[f"ckpt/state/v-{token}/scalar"].shape == ()
    # A bytes value is a 1-D uint8 array at <key>/v-<token>.
    notes = group[f"notes/v-{group['notes'].attrs['expstore']['live']}"]
    assert notes.dtype == np.uint8 and bytes(notes[...]) == b"hello"
    # expstore restores the exact dtype zarr normalized.
    with open_store(path) as store:
        assert store.read_tree("ckpt/state")["model"]["b"].dtype == np.dtype(">i4")


def test_opening_creates_nothing_and_an_empty_store_reads_as_empty(tmp_path):
    path = tmp_path / "never.zarr"
    store = open_store(path)
    assert store.list() == []
    with pytest.raises(KeyNotFound):
        store.read("k")
    with pytest.raises(KeyNotFound):
        store.read_tree("k")
    assert not store.exists("k")
    assert not path.exists()
    store.write("k", b"v")
    assert zarr.open_group(path, mode="r").attrs.asdict() == {}


def test_kill_at_random_instants_loses_no_committed_tree(tmp_path):
    """SIGKILL a writer of ~16 MiB trees at 50 random instants; every printed commit must survive intact."""
    url = str(tmp_path / "kill.zarr")
    keys, kills, rng = 3, 50, random.Random(4)
    committed: dict[str, int] = {}  # key -> newest generation whose commit was printed before a kill
    next_generation, lost, mid_write, orphans_before = 0, [], 0, 0
    started = time.monotonic()
    for attempt in range(kills):
        proc = _worker("write_trees", url, str(keys), str(next_generation))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        for line in out.splitlines():
            word, key, generation = line.split()
            assert word == "committed"
            committed[key] = max(committed.get(key, -1), int(generation))
            next_generation = max(next_generation, int(generation) + 1)
        next_generation += 1  # the generation in flight at the kill may have committed unprinted: skip it

        with open_store(url) as store:
            for key, generation in committed.items():
                try:
                    tree = store.read_tree(key)
                except Exception as exc:  # noqa: BLE001 - any failure to read is a lost tree
                    lost.append((attempt, key, repr(exc)))
                    continue
                problem = tree_problem(tree)
                if problem or tree["generation"] < generation:
                    lost.append((attempt, key, problem or f"generation {tree['generation']} < {generation}"))
            assert set(store.list()) <= {f"trees/t{i}" for i in range(keys)}
        orphans = sum(len(_children(Path(url), key)) - 1 for key in committed)
        mid_write += orphans > orphans_before  # a new orphan child: this kill landed inside a write
        orphans_before = orphans
    elapsed = time.monotonic() - started
    print(f"\nkill test: {kills} kills, {len(committed)} keys, {next_generation} generations, "
          f"kills inside a write {mid_write}, orphans left {orphans_before}, lost {len(lost)}, {elapsed:.1f} s")
    assert committed, "the writer never committed anything: the kills measured nothing"
    assert lost == []


def test_folder_that_is_not_a_zarr_group_raises_corrupt_data_and_stays_untouched(tmp_path):
    folder = tmp_path / "data.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    before = sorted(p.name for p in folder.iterdir())
    store = open_store(folder)
    for attempt in (lambda: store.write("k", b"v"), lambda: store.write_tree("t", {"a": np.ones(2)}),
                    lambda: store.read("k"), store.list):
        with pytest.raises(CorruptData, match="not a Zarr group") as info:
            attempt()
        assert str(folder) in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert (folder / "notes.txt").read_text() == "mine"


def test_root_that_is_a_zarr_array_or_a_file_raises_corrupt_data(tmp_path):
    array_root = tmp_path / "array.zarr"
    zarr.create_array(array_root, shape=(3,), dtype="i4")
    meta = (array_root / "zarr.json").read_bytes()
    with pytest.raises(CorruptData, match="not a Zarr v3 group"):
        open_store(array_root).write("k", b"v")
    assert (array_root / "zarr.json").read_bytes() == meta
    file_root = tmp_path / "file.zarr"
    file_root.write_bytes(b"not a folder")
    with pytest.raises(CorruptData):
        open_store(file_root).write("k", b"v")
    assert file_root.read_bytes() == b"not a folder"


def test_an_existing_zarr_group_is_used_as_is(tmp_path):
    path = tmp_path / "theirs.zarr"
    group = zarr.open_group(path, mode="w", attributes={"owner": "them"})
    group.create_array("their_array", shape=(2,), dtype="i2")
    with open_store(path) as store:
        store.write("k", b"v")
        assert store.list() == ["k"]  # their array is not an expstore key
    assert zarr.open_group(path, mode="r").attrs["owner"] == "them"


def test_orphan_of_a_killed_write_is_hidden_and_reclaimed(tmp_path, monkeypatch):
    path = tmp_path / "orphans.zarr"
    with open_store(path) as store:
        token = store.write_tree("t", expected_tree(1))
    proc = _worker("die_before_switch", str(path), "t")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    children = _children(path, "t")
    assert len(children) == 2 and f"v-{token}" in children  # the killed write left a complete child behind

    store = open_store(path)
    assert store.list() == ["t"]
    assert store.version("t") == token
    assert store.read_tree("t")["generation"] == 1  # readers follow the pointer, never the orphan
    assert zarr.open_group(path, mode="r")["t"].attrs["expstore"]["live"] == token

    # The next write of the key deletes it once it has settled (no writer holds its lock) ...
    monkeypatch.setattr(zarr_local, "SETTLE_SECONDS", 0.0)
    newer = store.write_tree("t", expected_tree(2))
    assert _children(path, "t") == [f"v-{newer}"]

    # ... and `reclaim` does the same for every key.
    proc = _worker("die_before_switch", str(path), "t")
    proc.communicate(timeout=120)
    assert len(_children(path, "t")) == 2
    assert store.reclaim() == 1
    assert _children(path, "t") == [f"v-{newer}"]
    assert tree_problem(store.read_tree("t")) is None


def test_a_child_still_being_written_is_not_reclaimed(tmp_path, monkeypatch):
    path = tmp_path / "inflight.zarr"
    monkeypatch.setattr(zarr_local, "SETTLE_SECONDS", 0.0)
    with open_store(path) as store:
        store.write("k", b"old")
        in_flight = path / "k" / f"v-{time.time_ns():x}-00000000"
        in_flight.mkdir()
        fd = os.open(in_flight, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)  # what a writer in another process holds while it writes
        try:
            assert store.reclaim() == 0
            store.write("k", b"new")
            assert in_flight.exists()
        finally:
            os.close(fd)
        assert store.reclaim() == 1
        assert not in_flight.exists()
        assert store.read("k") == b"new"


def test_overwrite_deletes_the_replaced_version(tmp_path):
    path = tmp_path / "rewrite.zarr"
    with open_store(path) as store:
        for generation in range(3):
            token = store.write("k", bytes([generation]) * 10)
        assert _children(path, "k") == [f"v-{token}"]
        store.delete("k")
        assert not path.joinpath("k").exists()


def test_racing_conditional_writers_exactly_one_wins(tmp_path):
    with open_store(tmp_path / "race.zarr") as store:
        base = store.write("cas", b"base")
        wins, fails = [], []
        barrier = threading.Barrier(8)

        def attempt(i: int) -> None:
            barrier.wait()
            try:
                store.write("cas", f"writer {i}".encode(), if_match=base)
                wins.append(i)
            except PreconditionFailed:
                fails.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and len(fails) == 7
        assert store.read("cas") == f"writer {wins[0]}".encode()


def test_keys_named_like_zarr_metadata_round_trip(tmp_path):
    path = tmp_path / "names.zarr"
    with open_store(path) as store:
        store.write("zarr.json", b"a")
        store.write("d/zarr.json/x", b"b")
        store.write("%zarr.json", b"c")
        assert store.list() == ["%zarr.json", "d/zarr.json/x", "zarr.json"]
        assert [store.read(k) for k in store.list()] == [b"c", b"b", b"a"]
    zarr.open_group(path, mode="r")  # still a valid hierarchy


def test_compressors_option_round_trips_and_shows_in_the_metadata(tmp_path):
    from zarr.codecs import ZstdCodec

    data = {"w": np.linspace(0, 1, 10_000, dtype=np.float64).reshape(100, 100)}
    plain = open_store(tmp_path / "plain.zarr")
    packed = open_store(tmp_path / "packed.zarr", compressors=ZstdCodec(level=3), chunks=(50, 50))
    for store in (plain, packed):
        token = store.write_tree("t", data)
        np.testing.assert_array_equal(store.read_tree("t")["w"], data["w"])
        store.close()
        node = zarr.open_group(store.root, mode="r")[f"t/v-{token}/w"]
        codecs = [c["name"] for c in node.metadata.to_dict()["codecs"]]
        if store is plain:
            assert codecs == ["bytes"]  # the measured default: no compression
        else:
            assert codecs == ["bytes", "zstd"] and node.chunks == (50, 50)


def test_unknown_storage_option_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match="compresors"):
        open_store(tmp_path / "x.zarr", compresors=None)
    with pytest.raises(TypeError, match="bogus"):
        open_store("zarr+memory://opts", bogus=1)
    assert not (tmp_path / "x.zarr").exists()


def test_memory_stores_of_one_name_share_values():
    name = f"zarr+memory://shared-{os.getpid()}-{time.time_ns()}"
    open_store(name).write_tree("t", {"a": np.arange(3)})
    np.testing.assert_array_equal(open_store(name).read_tree("t")["a"], np.arange(3))
    assert open_store(name + "-other").list() == []
