"""Opening an HDF5 file for one store operation, so that several processes (and plain h5py) share it.

Each operation opens the file, takes an `flock` on it (shared to read, exclusive to change: the
same lock HDF5's own file locking takes, so a user's `h5py.File(path, "r")` and expstore exclude
each other exactly while one of them writes), and closes it again. A lock held by another process
is retried with backoff up to `lock_timeout` seconds, then `StoreError` names the file. Changes go
through the redo journal (`backends/hdf5/journal.py`), which lets bytes bound for the file's free sections
(`backends/hdf5/free_space.py`) go straight to disk; a reader that finds a journal left by a killed writer
takes the exclusive lock and replays it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import h5py

from ...errors import CorruptData, StoreError
from ..posix import fsync_path
from .free_space import free_sections
from .journal import JournaledFile, recover

__all__ = ["LOCK_TIMEOUT", "FileHandle", "MemoryHandle", "disk_handle", "memory_handle"]

LOCK_TIMEOUT = 30.0  # seconds an operation waits for another process's lock on the file
T = TypeVar("T")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# New files keep their free-space map in the file, so space freed by one operation is reused by
# later ones, also after the file was closed and reopened (the default forgets it on close).
CREATE_OPTIONS: dict[str, Any] = {"fs_strategy": "fsm", "fs_persist": True, "fs_threshold": 1, "libver": ("v110", "v200")}


class FileHandle:
    """One HDF5 file on disk: `reading()` / `writing()` open it for the length of one operation."""

    def __init__(self, path: str, lock: threading.RLock, lock_timeout: float = LOCK_TIMEOUT):
        self.path = path
        self.lock = lock  # one operation at a time per file and process (h5py is not thread-safe in every build)
        self.lock_timeout = lock_timeout

    @contextlib.contextmanager
    def reading(self, url: str, key: str | None) -> Iterator[h5py.File | None]:
        """The file opened read-only under a shared lock; `None` if it does not exist."""
        with self.lock:
            while True:
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    yield None
                    return
                try:
                    self._lock(fd, fcntl.LOCK_SH, url, key)
                    self._check_signature(fd, url, key)
                    if not os.path.exists(self.path + ".journal"):
                        h5 = self._hdf5(lambda: h5py.File(self.path, "r", locking=False), url, key)
                        try:
                            yield h5
                        except StoreError:
                            raise
                        except (OSError, KeyError, RuntimeError) as exc:
                            if not _raised_by_h5py(exc):
                                raise
                            raise CorruptData(f"HDF5 cannot read {self.path!r}: {exc}", url=url, key=key) from exc
                        finally:
                            h5.close()
                        return
                finally:
                    os.close(fd)  # releases the lock
                with self.writing(url, key):  # a killed writer's journal: replay it, then read
                    pass

    @contextlib.contextmanager
    def writing(self, url: str, key: str | None) -> Iterator[h5py.File]:
        """The file (created if missing) opened through the journal under an exclusive lock; the
        operation commits as a whole when the block ends, and leaves no trace when it raises."""
        with self.lock:
            if not os.path.exists(self.path):
                self._create(url, key)
            fd = os.open(self.path, os.O_RDWR)
            try:
                self._lock(fd, fcntl.LOCK_EX, url, key)
                self._check_signature(fd, url, key)  # before the journal touches anything
                recover(fd, self.path)
                jf = JournaledFile(fd, self.path, self._hdf5(lambda: free_sections(self.path), url, key))
                h5 = self._hdf5(lambda: h5py.File(jf, "r+"), url, key)
                try:
                    yield h5
                    h5.close()  # HDF5 writes its metadata, superblock and free-space map here
                    jf.commit()
                except BaseException:
                    with contextlib.suppress(Exception):
                        h5.close()
                    jf.rollback()
                    raise
            finally:
                os.close(fd)

    def _lock(self, fd: int, mode: int, url: str, key: str | None) -> None:
        """flock `fd`, retrying with backoff while another process holds the file, up to the timeout."""
        deadline = time.monotonic() + self.lock_timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    what = "change" if mode == fcntl.LOCK_EX else "read"
                    raise StoreError(
                        f"the HDF5 file {self.path!r} stayed locked by another process for {self.lock_timeout:g} s"
                        f" (a save in progress, or an h5py.File open on it); could not {what} it"
                        " (storage option lock_timeout= sets the wait)",
                        url=url,
                        key=key,
                    ) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.05)

    def _check_signature(self, fd: int, url: str, key: str | None) -> None:
        if not _looks_like_hdf5(fd):
            raise CorruptData(f"{self.path!r} is not an HDF5 file", url=url, key=key)

    def _hdf5(self, opener: Callable[[], T], url: str, key: str | None) -> T:
        """Open the file with `opener`, reporting what HDF5 refuses (a truncated file, a damaged superblock) as `CorruptData`."""
        try:
            return opener()
        except OSError as exc:
            size = os.path.getsize(self.path)
            raise CorruptData(f"{self.path!r} ({size} bytes) cannot be opened as HDF5: {exc}", url=url, key=key) from exc

    def _create(self, url: str, key: str | None) -> None:
        """Create an empty HDF5 file under a temporary name and link it in: never a half-made file."""
        folder = os.path.dirname(self.path) or "."
        if os.path.isdir(self.path):
            raise CorruptData(f"{self.path!r} is a folder, not an HDF5 file", url=url, key=key)
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(f"cannot create {self.path!r}: a parent is not a folder", url=url, key=key) from None
        tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            h5py.File(tmp, "w", **CREATE_OPTIONS).close()
            fsync_path(tmp)
            with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
                os.link(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_path(folder)


class MemoryHandle:
    """`h5+memory://name`: an in-memory HDF5 file (h5py's core driver) that lives as long as the
    process, shared by every store of that name, like `memory://`. Nothing to journal: a crash
    loses it anyway. A failed change leaves the old value: `HDF5Store._install` makes the new one
    beside it first (the free-space options make it take that path)."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.RLock()
        self.h5: h5py.File | None = None

    @contextlib.contextmanager
    def reading(self, url: str, key: str | None) -> Iterator[h5py.File | None]:
        with self.lock:
            yield self.h5

    @contextlib.contextmanager
    def writing(self, url: str, key: str | None) -> Iterator[h5py.File]:
        with self.lock:
            if self.h5 is None:
                self.h5 = h5py.File(f"{self.path}-{uuid.uuid4().hex}", "w", driver="core", backing_store=False, **CREATE_OPTIONS)
            yield self.h5


_MEMORY: dict[str, MemoryHandle] = {}
_DISK_LOCKS: dict[str, threading.RLock] = {}
_REGISTRY_LOCK = threading.Lock()


def memory_handle(name: str) -> MemoryHandle:
    """The process's one in-memory file of this name."""
    with _REGISTRY_LOCK:
        return _MEMORY.setdefault(name, MemoryHandle(name))


def disk_handle(path: str, lock_timeout: float = LOCK_TIMEOUT) -> FileHandle:
    """A handle on the file at `path`; handles on one real path share one in-process lock."""
    real = os.path.realpath(path)
    with _REGISTRY_LOCK:
        lock = _DISK_LOCKS.setdefault(real, threading.RLock())
    return FileHandle(real, lock, lock_timeout)


def _raised_by_h5py(exc: BaseException) -> bool:
    """Whether h5py raised `exc` itself (its KeyError, OSError or RuntimeError for metadata HDF5
    cannot read), not expstore code running inside the operation (a bad `select=` is a KeyError too)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}h5py{os.sep}" in f"{os.sep}{tb.tb_frame.f_code.co_filename}"


def _looks_like_hdf5(fd: int) -> bool:
    """The HDF5 signature sits at offset 0 or at a user-block boundary 512, 1024, 2048..."""
    size = os.fstat(fd).st_size
    offset = 0
    while offset + 8 <= size:
        if os.pread(fd, 8, offset) == HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False
