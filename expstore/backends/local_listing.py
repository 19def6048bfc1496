"""Listing a local folder tree in one loop, for `LocalStore.list` and `list_versions`.

A folder whose inode and timestamps are the same as when this process last read it is not read again:
its file names come from memory and only the files are stat'ed (a file appended in place changes its
own stat, never its folder's). Listing an unchanged root of 10,000 runs then costs a stat per folder
and per file instead of reading 20,000 folders. A folder changed in the last `RECENT_NS` is read every
time: a second change within its timestamp's resolution would leave the timestamps equal.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..store.keys import RESERVED_PREFIX

__all__ = ["MAX_REMEMBERED", "RECENT_NS", "files_below"]

RECENT_NS = 2_000_000_000  # wider than any local filesystem's timestamp resolution and clock step
MAX_REMEMBERED = 1_000_000  # folders remembered per process; past it, all are forgotten and read again


@dataclass(frozen=True, slots=True)
class _Folder:
    """What one folder held when it was read: its (inode, mtime, ctime), and the names and paths of its
    files and sub-folders (the paths kept, so that their strings and hashes are not made again)."""

    stamp: tuple[int, int, int]
    files: tuple[tuple[str, str], ...]
    folders: tuple[tuple[str, str], ...]


_remembered: dict[str, _Folder] = {}


def _contents(path: str) -> _Folder:
    """The files and sub-folders of `path` (the backend's own temp and lock files left out), remembered or read."""
    st = os.stat(path)  # before the read: a change during the read then shows as a new stamp next time
    stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    held = _remembered.get(path)
    if held is not None and held.stamp == stamp:
        return held
    read_at = time.time_ns()
    files, folders = [], []
    with os.scandir(path) as found:
        for entry in found:
            name = entry.name
            if name.startswith(RESERVED_PREFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                folders.append((name, entry.path))
            elif entry.is_file():
                files.append((name, entry.path))
    folder = _Folder(stamp, tuple(files), tuple(folders))
    if st.st_ctime_ns < read_at - RECENT_NS:
        if len(_remembered) >= MAX_REMEMBERED:
            _remembered.clear()
        _remembered[path] = folder
    else:
        _remembered.pop(path, None)
    return folder


def files_below(top: str, base: str) -> list[tuple[str, str]]:
    """(key, path) of every file below folder `top`, keys prefixed with `base`; names starting with
    `RESERVED_PREFIX` (and what is below them) are left out. A folder that vanishes meanwhile is skipped."""
    out: list[tuple[str, str]] = []
    pending = [(top, base)]
    while pending:
        path, base = pending.pop()
        try:
            folder = _contents(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        pending.extend((child, f"{base}{name}/") for name, child in folder.folders)
        out.extend((base + name, child) for name, child in folder.files)
    return out
