"""HDF5Store beyond the conformance suite: layout seen by plain h5py, crash safety under SIGKILL,
the journal, stores and threads sharing a file, corrupt files, and dataset options."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from expstore import CorruptData, KeyNotFound, StoreError, open_store

from ..workers import REPO_ROOT
from ..workers.hdf5_workers import KEYS, tree_for


def worker(*args: str, stdin: int | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers.hdf5_workers", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stdin=stdin,
        text=True,
    )


# ---- layout ---------------------------------------------------------------------------------------


def test_plain_h5py_sees_trees_as_datasets_and_bytes_as_uint8(tmp_path):
    path = tmp_path / "run.h5"
    w = np.arange(12, dtype=">f8").reshape(3, 4).T  # big-endian and not contiguous
    with open_store(path) as store:
        store.write_tree("ckpt/state", {"model": {"w": w, "flag": np.array(True)}, "step": 7})
        store.write("logs/raw", b"\x00\x01\x02")
    with h5py.File(path, "r") as f:
        ds = f["ckpt/state/model/w"]
        assert ds.dtype == np.dtype(">f8") and ds.shape == (4, 3)
        np.testing.assert_array_equal(ds[()], w)
        assert ds.chunks is not None
        assert f["ckpt/state/model/flag"].shape == () and f["ckpt/state/model/flag"][()] == np.True_
        assert f["ckpt/state"].attrs["expstore"] == "tree"
        raw = f["logs/raw"]
        assert raw.dtype == np.uint8 and raw[()].tobytes() == b"\x00\x01\x02"


def test_missing_file_reads_raise_and_nothing_is_created(tmp_path):
    path = tmp_path / "sub" / "run.h5"
    with open_store(path) as store:
        assert store.list() == []
        with pytest.raises(KeyNotFound):
            store.read("k")
        with pytest.raises(KeyNotFound):
            store.read_tree("k")
    assert not (tmp_path / "sub").exists()


def test_value_under_a_value_is_refused_naming_the_key(tmp_path):
    with open_store(tmp_path / "run.h5") as store:
        store.write("a", b"1")
        store.write_tree("t", {"x": np.ones(2)})
        with pytest.raises(StoreError, match="'a/b'"):
            store.write("a/b", b"2")
        with pytest.raises(StoreError, match="'t/x'"):
            store.write_tree("t/x", {"y": np.ones(1)})
        store.write("d/e", b"3")
        with pytest.raises(StoreError, match="'d'"):
            store.write("d", b"4")
        assert store.list() == ["a", "d/e", "t"]
        assert store.read("a") == b"1"


def test_a_failed_change_leaves_the_committed_state(tmp_path, monkeypatch):
    path = tmp_path / "run.h5"
    with open_store(path) as store:
        store.write_tree("t", {"x": np.arange(4.0)})
        real = h5py.Group.create_dataset

        def fail_second(self, name, *args, **kwargs):
            if name == "b":
                raise RuntimeError("disk on fire")
            return real(self, name, *args, **kwargs)

        monkeypatch.setattr(h5py.Group, "create_dataset", fail_second)
        with pytest.raises(RuntimeError):
            store.write_tree("t", {"a": np.ones(3), "b": np.ones(3)})
        monkeypatch.undo()
        np.testing.assert_array_equal(store.read_tree("t")["x"], np.arange(4.0))
        store.write("after", b"still works")
    with open_store(path) as store:
        assert store.list() == ["after", "t"]


# ---- crash safety ---------------------------------------------------------------------------------


def _check_tree(store, key: str, allowed: set[int]) -> int:
    """Read the tree at `key`, check it is one of the allowed generations and intact; return it."""
    tree = store.read_tree(key)
    generation = tree["generation"]
    assert generation in allowed, f"{key}: generation {generation}, expected one of {sorted(allowed)}"
    expected = tree_for(key, generation)
    assert tree["key"] == key
    for name, array in expected["arrays"].items():
        np.testing.assert_array_equal(tree["arrays"][name], array, err_msg=f"{key}/{name} gen {generation}")
    return generation


def test_sigkilled_writer_never_loses_a_committed_tree(tmp_path):
    """≥ 50 SIGKILLs at random instants while a child writes 16 MiB trees; after each one, every
    tree the child reported committed is readable and intact (or a newer version in flight)."""
    path = str(tmp_path / "run.h5")
    rng = random.Random(20240604)
    state: dict[str, int | None] = {}  # key -> last committed generation, None once deleted
    kills = lost = journals_found = commits = 0
    started = time.monotonic()
    for round_ in range(50):
        child = worker("writer", path, str(round_ * 1_000_000), str(rng.randrange(2**32)))
        lines = []
        if round_ % 10 == 9:  # now and then, kill it while it opens (and maybe replays) the file
            time.sleep(rng.uniform(0.0, 0.8))
        else:
            lines.append(child.stdout.readline())
            assert lines[0] == "ready\n", lines
            time.sleep(rng.uniform(0.0, 0.9))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        lines += child.stdout.readlines()
        child.stdout.close()
        in_flight: tuple[str, str, int | None] | None = None
        for line in lines:
            if not line.endswith("\n"):
                continue  # cut off by the kill
            word, *rest = line.split()
            if word == "committed":
                state[rest[0]] = int(rest[1])
                commits += 1
                in_flight = None
            elif word == "deleted":
                state[rest[0]] = None
                in_flight = None
            elif word == "writing":
                in_flight = ("write", rest[0], int(rest[1]))
            elif word == "deleting":
                in_flight = ("delete", rest[0], None)
        journals_found += os.path.exists(path + ".journal")
        if not os.path.exists(path):
            continue
        with open_store(path) as store:
            assert not os.path.exists(path + ".journal")
            present = set(store.list("trees/"))
            for key in KEYS:
                committed = state.get(key)
                allowed: set[int] = set() if committed is None else {committed}
                may_vanish = committed is None
                if in_flight and in_flight[1] == key:
                    if in_flight[0] == "write":
                        allowed.add(in_flight[2])
                    else:
                        may_vanish = True
                if key not in present:
                    if not may_vanish:
                        lost += 1
                    state[key] = None
                    continue
                try:
                    state[key] = _check_tree(store, key, allowed)
                except (StoreError, AssertionError) as exc:
                    print(f"round {round_}: {key} lost: {exc}")
                    lost += 1
            for key in store.list("bytes/"):
                value = store.read(key)
                assert len(value) == 8000 and value == value[:8] * 1000, key
        with h5py.File(path, "r") as f:  # plain h5py opens what expstore left
            f.visit(lambda name: None)
    elapsed = time.monotonic() - started
    print(
        f"\nkill test: {kills} kills, {commits} commits reported, {journals_found} kills left a journal, "
        f"{lost} lost trees, {elapsed:.1f} s, file {os.path.getsize(path) / 2**20:.0f} MiB"
    )
    assert kills >= 50
    assert commits >= 25  # the kills really landed among writes (about 90 on an idle machine)
    assert lost == 0


def _die_after_journal(path: Path) -> None:
    child = worker("die-after-journal", str(path), "new")
    assert child.wait() == 3
    child.stdout.close()
    assert Path(str(path) + ".journal").exists()


def test_a_complete_journal_is_replayed_on_open(tmp_path):
    path = tmp_path / "run.h5"
    with open_store(path) as store:
        store.write_tree("old", {"x": np.arange(5)})
    _die_after_journal(path)
    with open_store(path) as store:
        assert store.list() == ["new", "old"]
        assert store.read_tree("new")["note"] == "from the journal"
        np.testing.assert_array_equal(store.read_tree("old")["x"], np.arange(5))
    assert not Path(str(path) + ".journal").exists()


def test_a_journal_left_by_an_earlier_expstore_is_replayed(tmp_path):
    """Journal format 1 ended with a sha256 where format 2 has a crc32c: a crash under the old
    version must still be recovered by the new one."""
    path = tmp_path / "run.h5"
    with open_store(path) as store:
        store.write_tree("old", {"x": np.arange(5)})
    _die_after_journal(path)
    journal = Path(str(path) + ".journal")
    blob = journal.read_bytes()
    assert blob.startswith(b"EXPSTORE-HDF5-JOURNAL-2\n")
    body = b"EXPSTORE-HDF5-JOURNAL-1\n" + blob[24:-4]
    journal.write_bytes(body + hashlib.sha256(body).digest())
    with open_store(path) as store:
        assert store.list() == ["new", "old"] and store.read_tree("new")["note"] == "from the journal"
    assert not journal.exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage"])
def test_a_torn_journal_is_discarded_and_committed_data_survives(tmp_path, damage):
    path = tmp_path / "run.h5"
    with open_store(path) as store:
        store.write_tree("old", {"x": np.arange(5)})
        store.write("v", b"value")
    _die_after_journal(path)
    journal = Path(str(path) + ".journal")
    blob = bytearray(journal.read_bytes())
    if damage == "truncated":
        blob = blob[: len(blob) - 10]
    elif damage == "flipped":
        blob[len(blob) // 2] ^= 0xFF
    else:
        blob = bytearray(os.urandom(len(blob)))
    journal.write_bytes(bytes(blob))
    Path(str(path) + ".journal.tmp").write_bytes(b"stray")
    with open_store(path) as store:
        assert store.list() == ["old", "v"]
        np.testing.assert_array_equal(store.read_tree("old")["x"], np.arange(5))
        assert store.read("v") == b"value"
    assert not journal.exists() and not Path(str(path) + ".journal.tmp").exists()
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["old", "v"]


def test_a_rewrite_writes_its_data_once_and_survives_a_crash_after_its_journal(tmp_path):
    """A rewrite's bytes go to free sections or past the end, not through the journal: the journal
    of a 16 MiB rewrite holds only metadata, and replaying it gives the new value intact."""
    path = tmp_path / "run.h5"
    child = worker("die-in-rewrite", str(path))
    assert child.wait() == 3
    child.stdout.close()
    journal = Path(str(path) + ".journal")
    assert journal.stat().st_size < 2**20  # the tree is 16 MiB
    with open_store(path) as store:
        assert _check_tree(store, "big", {2}) == 2
    assert not journal.exists()


@pytest.mark.parametrize("made_by", ["expstore", "plain h5py"])
def test_the_file_stays_bounded_over_100_rewrites_and_reopens(tmp_path, made_by):
    """Space a rewrite frees is reused by later ones, also after the store was closed and reopened,
    in files expstore makes; files that forget their free space on close (plain h5py's, earlier
    expstore's) reuse the old value's space within each rewrite."""
    path = tmp_path / "run.h5"
    if made_by == "plain h5py":
        h5py.File(path, "w").close()
    tree = {"w": np.random.default_rng(0).random((512, 256)), "b": np.arange(5)}  # 1 MiB
    sizes = []
    for round_ in range(10):
        with open_store(path) as store:
            for i in range(10):
                store.write_tree("ckpt", {**tree, "i": round_ * 10 + i})
                store.write("index.json", b"{}" * (i + 1))
        sizes.append(os.path.getsize(path))
    if made_by == "expstore":
        assert max(sizes) < 4 * 2**20, sizes  # two or three versions (metadata splits free sections) and metadata
    else:  # reuse within each operation only: it grows by a version every ~20 rewrites, not every rewrite
        assert max(sizes) < 16 * 2**20, sizes
    with open_store(path) as store:
        assert store.read_tree("ckpt")["i"] == 99


# ---- sharing within a process --------------------------------------------------------------------------


def test_stores_on_one_file_see_each_others_writes(tmp_path):
    path = tmp_path / "run.h5"
    a = open_store(path)
    b = open_store(f"h5://{path}")
    inner = open_store(f"{path}/inner")
    a.write("k", b"from a")
    assert b.read("k") == b"from a"
    inner.write("x", b"1")
    assert a.list() == ["inner/x", "k"]
    a.close()
    assert b.read("inner/x") == b"1"  # still open for the others
    b.close()
    inner.close()
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["inner", "k"]


def test_two_threads_hammering_one_store(tmp_path):
    path = tmp_path / "run.h5"
    store = open_store(path)
    other = open_store(path)
    errors: list[BaseException] = []

    def hammer(s, name: str) -> None:
        try:
            for i in range(40):
                s.write_tree(f"{name}/t{i % 4}", {"i": i, "a": np.full(5000, i, dtype=np.int64)})
                s.write(f"{name}/b{i % 3}", str(i).encode())
                back = s.read_tree(f"{name}/t{i % 4}")
                assert back["i"] == i and (back["a"] == i).all()
                s.list()
                if i % 7 == 0:
                    s.delete(f"{name}/b{i % 3}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(s, n)) for s, n in ((store, "x"), (other, "y"), (store, "z"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store.close()
    other.close()
    with open_store(path) as again:
        for name in "xyz":
            for j in range(4):
                tree = again.read_tree(f"{name}/t{j}")
                assert (tree["a"] == tree["i"]).all() and tree["i"] % 4 == j
    with h5py.File(path, "r") as f:
        f.visit(lambda name: None)


# ---- bad files and options ------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"this is not HDF5 at all" * 100])
def test_a_file_that_is_not_hdf5_raises_corrupt_data_and_is_left_alone(tmp_path, content):
    path = tmp_path / "notes.h5"
    path.write_bytes(content)
    with pytest.raises(CorruptData, match="not an HDF5 file") as info:
        open_store(path)
    assert str(path) in str(info.value)
    with pytest.raises(CorruptData):
        open_store(f"{path}/inner/key").write("k", b"x")
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["notes.h5"]


def test_compression_options_reach_the_datasets(tmp_path):
    path = tmp_path / "run.h5"
    data = np.tile(np.arange(1000, dtype=np.float32), 100)
    with open_store(path, compression="gzip", compression_opts=4, shuffle=True) as store:
        store.write_tree("t", {"w": data, "s": np.array(2.0), "e": np.empty((0,), np.int8)})
        back = store.read_tree("t")
    np.testing.assert_array_equal(back["w"], data)
    assert back["s"].shape == () and back["e"].shape == (0,)
    with h5py.File(path, "r") as f:
        assert f["t/w"].compression == "gzip" and f["t/w"].compression_opts == 4 and f["t/w"].shuffle
        assert f["t/w"].id.get_storage_size() < data.nbytes / 4
        assert f["t/s"].compression is None


def test_unknown_storage_option_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match="compresion"):
        open_store(tmp_path / "run.h5", compresion="gzip")
    assert not (tmp_path / "run.h5").exists()


@pytest.mark.parametrize("dtype", ["<U3", "datetime64[s]", "timedelta64[ms]"])
def test_a_dtype_hdf5_cannot_store_is_a_type_error_naming_the_array(tmp_path, dtype):
    store = open_store(str(tmp_path / "run.h5"))
    store.write_tree("kept", {"w": np.arange(3)})
    with pytest.raises(TypeError, match=r"'bad/x'.*cannot store"):
        store.write_tree("new", {"ok": np.ones(2), "bad": {"x": np.zeros(2, dtype=dtype)}})
    assert not store.exists("new")
    np.testing.assert_array_equal(store.read_tree("kept")["w"], np.arange(3))
    store.close()


def test_a_failed_write_to_an_in_memory_file_leaves_the_key_writable(monkeypatch):
    store = open_store("h5+memory://failed-write")
    store.write_tree("t", {"x": np.arange(3.0)})
    real = h5py.Group.create_dataset

    def fail(self, name, *args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    with pytest.raises(RuntimeError):
        store.write_tree("t", {"x": np.ones(3)})
    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    np.testing.assert_array_equal(store.read_tree("t")["x"], np.arange(3.0))
    store.write_tree("t", {"x": np.ones(3)})
    assert store.list() == ["t"] and (store.read_tree("t")["x"] == 1).all()
