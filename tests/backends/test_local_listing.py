"""The local store's listing remembers folders whose stamp (inode, mtime, ctime) is unchanged, with their files'
versions: every change the store makes must still show in the next `list` / `list_versions`, and a file another
program changes in place must show once its folder's versions are re-checked."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from expstore import open_store
from expstore.backends import local_listing


@pytest.fixture
def remembering(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders count as old at once, so that the ones a test has just made are remembered."""
    monkeypatch.setattr(local_listing, "RECENT_NS", -10**12)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store = open_store(str(tmp_path))
    for key in ("a/logs/a_run.json", "a/logs/a_structured.jsonl", "b/logs/b_run.json", "top.json"):
        store.write(key, b"{}")
    return tmp_path


def test_a_remembered_folder_is_not_read_again(root: Path, remembering: None, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(str(root))
    first = store.list_versions("")
    opened: list[str] = []
    scandir = os.scandir

    def counting(path: str) -> os.ScandirIterator:  # type: ignore[type-arg]
        opened.append(path)
        return scandir(path)

    monkeypatch.setattr(local_listing.os, "scandir", counting)
    assert store.list_versions("") == first
    assert opened == []  # an unchanged root: every folder stat'ed, none read
    store.write("a/logs/added.json", b"{}")
    assert "a/logs/added.json" in store.list_versions("")
    assert opened == [str(root / "a" / "logs")]  # only the folder that changed


def test_an_unchanged_root_costs_one_stat_per_folder(root: Path, remembering: None, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(str(root))
    first = store.list_versions("")
    stated: list[str] = []
    real_stat = os.stat

    def counting(path: str, *args: object, **kwargs: object) -> os.stat_result:
        stated.append(str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local_listing.os, "stat", counting)
    assert store.list_versions("") == first
    assert sorted(stated) == sorted(str(p) for p in [root, root / "a", root / "a" / "logs", root / "b", root / "b" / "logs"])


def test_a_file_changed_in_place_by_another_program_shows_at_its_recheck(
        root: Path, remembering: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another program's write in place leaves the folder's stamp alone: the remembered versions are re-checked in time."""
    store = open_store(str(root))
    store.list_versions("")
    with open(root / "a" / "logs" / "a_structured.jsonl", "ab") as f:
        f.write(b'{"by": "tail -f >>"}\n')
    now = time.time_ns()
    monkeypatch.setattr(local_listing.time, "time_ns", lambda: now + local_listing.TRUSTED_NS)
    listed = store.list_versions("")
    assert listed["a/logs/a_structured.jsonl"] == store.version("a/logs/a_structured.jsonl")
    assert listed == {key: store.version(key) for key in store.list("")}


def test_an_append_in_place_shows_as_a_new_version(root: Path, remembering: None) -> None:
    store = open_store(str(root))
    before = store.list_versions("")
    store.append("a/logs/a_structured.jsonl", b'{"more": 1}\n')
    after = store.list_versions("")
    assert after["a/logs/a_structured.jsonl"] != before["a/logs/a_structured.jsonl"]
    assert {k: v for k, v in after.items() if k != "a/logs/a_structured.jsonl"} == \
        {k: v for k, v in before.items() if k != "a/logs/a_structured.jsonl"}


def test_files_and_folders_added_removed_or_replaced_show(root: Path, remembering: None) -> None:
    store = open_store(str(root))
    store.list("")
    store.write("a/logs/new.json", b"1")  # a file in a remembered folder
    store.write("c/deep/er/x.json", b"2")  # a new folder tree
    store.delete("b/logs/b_run.json")
    store.write("top.json", b"replaced")  # atomic replace: a new inode
    listed = store.list_versions("")
    assert sorted(listed) == ["a/logs/a_run.json", "a/logs/a_structured.jsonl", "a/logs/new.json", "c/deep/er/x.json", "top.json"]
    assert store.read("top.json") == b"replaced" and listed["top.json"] == store.version("top.json")


def test_a_change_hidden_behind_a_restored_mtime_still_shows(root: Path, remembering: None) -> None:
    """Tools that restore a folder's mtime (tar, rsync -t) cannot restore its ctime."""
    store = open_store(str(root))
    folder = root / "a" / "logs"
    stamp = os.stat(folder)
    store.list("")
    (folder / "planted.json").write_bytes(b"{}")
    os.utime(folder, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert os.stat(folder).st_mtime_ns == stamp.st_mtime_ns
    assert "a/logs/planted.json" in store.list("")


def test_a_removed_and_recreated_folder_is_read_again(root: Path, remembering: None) -> None:
    store = open_store(str(root))
    store.list("")
    for name in os.listdir(root / "b" / "logs"):
        os.unlink(root / "b" / "logs" / name)
    os.rmdir(root / "b" / "logs")
    os.mkdir(root / "b" / "logs")
    (root / "b" / "logs" / "other.json").write_bytes(b"{}")
    assert [k for k in store.list("") if k.startswith("b/")] == ["b/logs/other.json"]


def test_a_folder_changed_just_now_is_not_remembered(root: Path) -> None:
    """Two changes within one tick of the filesystem clock leave a folder's stamp equal: such a folder is read every time."""
    store = open_store(str(root))
    store.list("")
    assert str(root / "a" / "logs") not in local_listing._remembered
    store.write("a/logs/second.json", b"{}")
    assert "a/logs/second.json" in store.list("")


def test_stores_rooted_at_a_folder_and_below_it_each_get_their_own_keys(root: Path, remembering: None) -> None:
    outer, inner = open_store(str(root)), open_store(str(root / "a"))
    for _ in range(2):  # the second round is served from the remembered folders
        assert inner.list_versions("") == {"logs/a_run.json": inner.version("logs/a_run.json"),
                                           "logs/a_structured.jsonl": inner.version("logs/a_structured.jsonl")}
        assert outer.list("a/") == ["a/logs/a_run.json", "a/logs/a_structured.jsonl"]
        assert outer.list("") == ["a/logs/a_run.json", "a/logs/a_structured.jsonl", "b/logs/b_run.json", "top.json"]
