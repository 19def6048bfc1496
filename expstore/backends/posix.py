"""The POSIX steps the on-disk backends share: fsync, a durable atomic replace of a file, and flocks."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["flocked", "fsync_path", "fsync_tree", "lock_if_free", "new_file_beside", "write_all"]


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or folder by path (a folder's fsync makes the renames inside it durable)."""
    fd = os.open(os.fspath(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """fsync every file and folder below `folder`, and the folder holding it."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath)
    fsync_path(os.path.dirname(os.path.abspath(folder)))


def write_all(fd: int, data: bytes | memoryview) -> None:
    """`os.write` until every byte is written (one call may write fewer)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class PendingFile:
    """The next content of `path`, written to a temp file beside it until `replace()` puts it in place."""

    def __init__(self, path: Path, temp: Path, fd: int):
        self.path = path
        self.temp = temp
        self.fd = fd
        self.replaced = False

    def write(self, parts: Iterable[bytes | memoryview]) -> None:
        """Write `parts` back to back and fsync them: the content is durable before anything names it."""
        for part in parts:
            write_all(self.fd, part)
        os.fsync(self.fd)

    def replace(self) -> os.stat_result:
        """Rename the temp file over `path` (atomic: a reader sees the old content or the new); return its stat."""
        os.replace(self.temp, self.path)
        self.replaced = True
        return os.fstat(self.fd)


@contextlib.contextmanager
def new_file_beside(path: str | os.PathLike[str], temp_name: str, *, lock_temp: bool = False) -> Iterator[PendingFile]:
    """A temp file `temp_name` in `path`'s folder for the block to write and `replace()` `path` with.

    After a replace the folder is fsynced, so the rename survives a crash; a block that raises or ends
    without a replace deletes the temp file. `lock_temp`: hold an exclusive flock on the temp file
    meanwhile, which tells a cleaner (`lock_if_free`) that its writer is alive.
    """
    target = Path(path)
    temp = target.parent / temp_name
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    pending = PendingFile(target, temp, fd)
    try:
        try:
            if lock_temp:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield pending
        finally:
            os.close(fd)
    finally:
        if not pending.replaced:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    if pending.replaced:
        fsync_path(target.parent)


@contextlib.contextmanager
def flocked(path: str | os.PathLike[str], *, shared: bool = False, create: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (a folder, or a file that `create` makes if missing) for the block;
    closing the descriptor releases it, also when the process dies."""
    flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def lock_if_free(path: str | os.PathLike[str]) -> Iterator[int | None]:
    """An exclusive flock on `path` taken without waiting, for the block: yields the locked descriptor,
    or None when another process holds a lock on it (`FileNotFoundError` when `path` is gone)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        yield fd if free else None
    finally:
        os.close(fd)
