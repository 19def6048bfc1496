"""LocalStore: a folder on disk; atomic writes by temp file + fsync + os.replace + folder fsync."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from pathlib import Path

from ..errors import KeyNotFound, StoreError
from ..store.base import Store
from ..store.conditions import check_condition
from ..store.keys import RESERVED_PREFIX
from .local_listing import file_version, keys_below, versions_below
from .posix import flocked, fsync_path, lock_if_free, new_file_beside, write_all

__all__ = ["LocalStore", "open_url"]

TEMP_PREFIX = RESERVED_PREFIX + "tmp-"
LOCK_NAME = RESERVED_PREFIX + "lock"
JUST_CREATED_SECONDS = 5.0  # an empty unlocked temp file younger than this may be a writer's, before its lock


class LocalStore(Store):
    """Values are files under `root`; a key's `/` are sub-folders.

    Every commit (write, append, delete) takes a per-folder `flock` for the instant of the
    switch, so conditional writes are exact across threads and processes on one host.
    """

    supports_append = True
    supports_conditional_writes = True

    def __init__(self, root: str | os.PathLike[str], url: str | None = None):
        self.root = Path(root).expanduser().absolute()
        self._root_prefix = os.path.join(str(self.root), "")
        super().__init__(url or str(self.root))

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _local_path(self, key: str) -> str:
        """`_path` as a str, for the hot read paths: building a `Path` costs more than reading a small file."""
        return self._root_prefix + key.replace("/", os.sep)

    def _read(self, key: str) -> bytes:
        try:
            with open(self._local_path(key), "rb", buffering=0) as f:
                return f.read()
        except IsADirectoryError:
            raise KeyNotFound("no value at this key (it is a folder)", url=self.url, key=key) from None

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        try:
            with open(self._local_path(key), "rb", buffering=0) as f:
                f.seek(start)
                return f.read() if end is None else f.read(end - start)
        except IsADirectoryError:
            raise KeyNotFound("no value at this key (it is a folder)", url=self.url, key=key) from None

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        return self._write_parts(key, [data], if_absent, if_match)

    def _write_parts(self, key: str, parts: list[bytes | memoryview], if_absent: bool, if_match: str | None) -> str:
        path = self._path(key)
        folder = self._make_folder(path.parent, key)
        # The temp file's lock, held while we live, tells remove_stale_temp_files to keep it.
        with new_file_beside(path, f"{TEMP_PREFIX}{secrets.token_hex(8)}", lock_temp=True) as pending:
            pending.write(parts)
            with _folder_lock(folder):
                if if_absent or if_match is not None:
                    check_condition(_current_version(path), if_absent, if_match, self.url, key)
                _stamp_unique_mtime(pending.fd)
                return file_version(pending.replace())

    def remove_stale_temp_files(self, dry_run: bool = False) -> list[str]:
        """Delete the temp files of writers that died mid-write (no process holds their lock);
        return their paths relative to the root (`dry_run`: find them, delete nothing)."""
        removed = []
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = Path(folder) / name
                if name.startswith(TEMP_PREFIX) and _abandoned(path, unlink=not dry_run):
                    removed.append(path.relative_to(self.root).as_posix())
        return sorted(removed)

    def _append(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        folder = self._make_folder(path.parent, key)
        with _folder_lock(folder):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                write_all(fd, data)
                os.fsync(fd)
                _stamp_unique_mtime(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(PermissionError):  # a folder not ours to touch: listings see the append later
                _stamp_unique_mtime(folder)  # after the write: a listing that saw the folder unchanged re-reads it

    def _delete(self, key: str) -> None:
        path = self._path(key)
        if not path.parent.is_dir():
            raise KeyNotFound("no value at this key", url=self.url, key=key)
        with _folder_lock(path.parent):
            if not path.is_file():
                raise KeyNotFound("no value at this key", url=self.url, key=key)
            os.unlink(path)
        fsync_path(path.parent)

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _size(self, key: str) -> int:
        return self._stat(key).st_size

    def _version(self, key: str) -> str:
        return file_version(self._stat(key))

    def _stat(self, key: str) -> os.stat_result:
        st = os.stat(self._local_path(key))
        if not stat.S_ISREG(st.st_mode):
            raise KeyNotFound("no value at this key (it is a folder)", url=self.url, key=key)
        return st

    def _list(self, prefix: str) -> list[str]:
        return keys_below(*self._walk_from(prefix))

    def _list_versions(self, prefix: str) -> list[tuple[str, str]]:
        return versions_below(*self._walk_from(prefix))

    def _walk_from(self, prefix: str) -> tuple[str, str]:
        """The folder a listing of `prefix` starts at, and the key prefix of its files."""
        folder_part = prefix.rpartition("/")[0]
        start = self._path(folder_part) if folder_part else self.root
        return str(start), f"{folder_part}/" if folder_part else ""

    def _make_folder(self, folder: Path, key: str) -> Path:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(
                "cannot create the key's folder: a value already sits at one of its parent segments",
                url=self.url,
                key=key,
            ) from None
        return folder


def _current_version(path: Path) -> str | None:
    """The version at `path` for a precondition check; None when nothing is there. A folder has no
    version but is there: it gets the empty one, which `if_absent` refuses and no `if_match` names."""
    if path.is_file():
        return file_version(path.stat())
    return "" if path.exists() else None


def _stamp_unique_mtime(target: int | Path) -> None:
    """Give a file (or folder) a nanosecond mtime: the kernel's coarse clock would let two versions share a stamp."""
    now = time.time_ns()
    os.utime(target, ns=(now, now))


def _folder_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """The lock every commit in `folder` holds for the instant of its switch."""
    return flocked(folder / LOCK_NAME, create=True)


def open_url(url: str, location: str) -> LocalStore:
    """Open a local folder; `location` is its path (the registry has already decoded `file://`)."""
    return LocalStore(location, url=url)


def _abandoned(path: Path, unlink: bool) -> bool:
    """Whether the temp file's writer is gone (its lock is free, and it is not one just created: a
    writer opens the file an instant before it takes the lock); if so and `unlink`, unlink it."""
    try:
        with lock_if_free(path) as fd:
            if fd is None:
                return False  # a live writer holds it
            st = os.fstat(fd)
            if st.st_size == 0 and time.time() - st.st_mtime < JUST_CREATED_SECONDS:
                return False
            if unlink:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return True
    except (FileNotFoundError, IsADirectoryError):
        return False
