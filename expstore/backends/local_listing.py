"""Listing a local folder tree in one loop, for `LocalStore.list` and `list_versions`.

Every change the local store makes changes the stamp (inode, mtime, ctime) of the key's folder: a write or
delete by its rename or unlink, an append in place by a touch of the folder after the write. So a folder
whose stamp is the same as when this process last read it is not read again, and its files' versions come
from memory: listing an unchanged root of 10,000 runs costs one stat per folder. A file changed in place by
another program, which leaves its folder's stamp alone, shows once its folder's versions are re-checked,
within `TRUSTED_NS` (as NFS clients trust cached attributes for up to 60 s). A folder changed in the last
`RECENT_NS` is read every time: a second change within its timestamp's resolution would leave the stamp equal.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..store.keys import RESERVED_PREFIX

__all__ = ["MAX_REMEMBERED", "RECENT_NS", "TRUSTED_NS", "file_version", "keys_below", "versions_below"]

RECENT_NS = 2_000_000_000  # wider than any local filesystem's timestamp resolution and clock step
TRUSTED_NS = 30_000_000_000  # remembered versions of an unchanged folder are re-checked within this
MAX_REMEMBERED = 1_000_000  # folders remembered per process; past it, all are forgotten and read again


def file_version(st: os.stat_result) -> str:
    """A local file's version token: inode, nanosecond mtime and size."""
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


@dataclass(frozen=True, slots=True)
class _Keyed:
    """A folder's contents made ready for a listing whose keys there start with `base`: the sub-folders'
    (path, key prefix), and once asked for, the files' (key, version) with the time to re-check them.
    Replaced whole, never changed: threads listing the same folder see one consistent record."""

    base: str
    below: list[tuple[str, str]]
    versions: list[tuple[str, str]] | None = None
    recheck_at: int = 0


@dataclass(slots=True)
class _Folder:
    """What one folder held when it was read: its (inode, mtime, ctime), the names and paths of its files
    and sub-folders (sorted), and their keyed record for the last listing that reached it."""

    stamp: tuple[int, int, int]
    files: tuple[tuple[str, str], ...]
    folders: tuple[tuple[str, str], ...]
    keyed: _Keyed | None = None


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
    # Sorted files, sub-folders in reverse (the walk pops them last first): the listing then comes out
    # nearly in key order, which costs its sort one pass.
    folder = _Folder(stamp, tuple(sorted(files)), tuple(sorted(folders, reverse=True)))
    if st.st_ctime_ns < read_at - RECENT_NS:
        if len(_remembered) >= MAX_REMEMBERED:
            _remembered.clear()
        _remembered[path] = folder
    else:
        _remembered.pop(path, None)
    return folder


def _folders_below(top: str, base: str) -> list[tuple[_Folder, _Keyed]]:
    """Folder `top` and every folder below it, each with its keyed record; a folder that vanishes meanwhile is skipped."""
    out: list[tuple[_Folder, _Keyed]] = []
    pending = [(top, base)]
    while pending:
        path, base = pending.pop()
        try:
            folder = _contents(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        keyed = folder.keyed
        if keyed is None or keyed.base != base:
            keyed = folder.keyed = _Keyed(base, [(child, f"{base}{name}/") for name, child in folder.folders])
        pending.extend(keyed.below)
        out.append((folder, keyed))
    return out


def keys_below(top: str, base: str) -> list[str]:
    """The key of every file below folder `top`, prefixed with `base`; names starting with `RESERVED_PREFIX`
    (and what is below them) are left out."""
    return [f"{keyed.base}{name}" for folder, keyed in _folders_below(top, base) for name, _ in folder.files]


def _versions(folder: _Folder, keyed: _Keyed, now: int) -> list[tuple[str, str]]:
    """(key, version) of the folder's files: remembered until their re-check is due, else stat'ed now."""
    if keyed.versions is not None and now < keyed.recheck_at:
        return keyed.versions
    versions = []
    for name, path in folder.files:
        try:
            versions.append((f"{keyed.base}{name}", file_version(os.stat(path))))
        except FileNotFoundError:
            continue  # deleted since the folder was read
    # Each folder re-checks at its own point within the second half of TRUSTED_NS, so that a long-lived
    # process spreads the re-checks over its listings instead of stat'ing every file in one of them.
    recheck_at = now + TRUSTED_NS // 2 + hash(folder.files) % (TRUSTED_NS // 2)
    folder.keyed = _Keyed(keyed.base, keyed.below, versions, recheck_at)
    return versions


def versions_below(top: str, base: str) -> list[tuple[str, str]]:
    """(key, version) of every file below folder `top`, as `keys_below` lists them."""
    now = time.time_ns()
    out: list[tuple[str, str]] = []
    for folder, keyed in _folders_below(top, base):
        out.extend(_versions(folder, keyed, now))
    return out
