"""HDF5Store: one HDF5 file per store, made crash-safe by a redo journal below the HDF5 library.

HDF5 has no journal of its own: a process killed while the library flushes metadata can leave
the whole file unreadable. h5py here talks to the file through `JournaledFile`, a file object
that sends writes past the last committed end of the file straight to disk (committed state
cannot reference those bytes) and keeps writes over committed bytes in memory until
`commit()`, which makes them durable in `<file>.journal` before applying them. Every store
operation that changes the file ends with `h5file.flush()` + `commit()`, so each one is atomic
as a whole; a file opened after a crash replays (or discards) the journal first.

Layout, readable by plain h5py once expstore has closed the file: a bytes value at `a/b` is a
1-D uint8 dataset `/a/b`; a tree at `k` is a group `/k` whose attributes hold the skeleton and
whose arrays are chunked datasets `/k/<array path>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import h5py
import numpy as np

from ..errors import CorruptData, InvalidURL, KeyNotFound, PreconditionFailed, StoreError
from ..store.base import Store
from ..store.checksum import CRC32C_ATTRIBUTE, array_crc32c, check_array_crc32c
from .durable import fsync_path
from .journal import JournaledFile, recover
from ..store.keys import RESERVED_PREFIX
from ..store.tree import Skeleton, array_paths, select_paths, unflatten

KIND_ATTR = "expstore"  # "bytes" on a bytes dataset, "tree" on a tree group
VERSION_ATTR = "expstore_version"
SKELETON_ATTR = "expstore_skeleton"
# h5py dataset options a user may pass through storage options; they apply to tree arrays.
DATASET_OPTIONS = frozenset({"compression", "compression_opts", "shuffle", "fletcher32", "scaleoffset", "chunks"})

CHUNK_BYTES = 2**20  # default chunk size of tree arrays (`chunks=` overrides)
T = TypeVar("T")


# ---- one shared, locked handle per file and process ---------------------------------------------


class _Handle:
    """The process's one open of an HDF5 file: descriptor + flock + journal + h5py.File, under one lock."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.RLock()
        self.refs = 0
        self.fd: int | None = None
        self.jf: JournaledFile | None = None
        self.h5: h5py.File | None = None

    def file(self, url: str, key: str | None, create: bool) -> h5py.File | None:
        """The open h5py.File; `None` if the file does not exist and `create` is false."""
        if self.h5 is None:
            if not os.path.exists(self.path):
                if not create:
                    return None
                self._create(url, key)
            self._open(url, key)
        return self.h5

    def _create(self, url: str, key: str | None) -> None:
        """Create an empty HDF5 file under a temporary name and link it in: never a half-made file."""
        folder = os.path.dirname(self.path) or "."
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(f"cannot create {self.path!r}: a parent is not a folder", url=url, key=key) from None
        tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            h5py.File(tmp, "w").close()
            fsync_path(tmp)
            with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
                os.link(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_path(folder)

    def _open(self, url: str, key: str | None) -> None:
        if os.path.isdir(self.path):
            raise CorruptData(f"{self.path!r} is a folder, not an HDF5 file", url=url, key=key)
        fd = os.open(self.path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(
                    f"the HDF5 file {self.path!r} is open in another process", url=url, key=key
                ) from None
            if not _looks_like_hdf5(fd):  # checked before the journal touches anything
                raise CorruptData(f"{self.path!r} is not an HDF5 file", url=url, key=key)
            recover(fd, self.path)
            jf = JournaledFile(fd, self.path)
            try:
                h5 = h5py.File(jf, "r+")
            except OSError as exc:
                raise CorruptData(f"{self.path!r} cannot be opened as HDF5: {exc}", url=url, key=key) from exc
        except BaseException:
            os.close(fd)  # releases the flock
            raise
        self.fd, self.jf, self.h5 = fd, jf, h5
        self.commit()  # drops bytes a killed writer left past the committed end

    def commit(self) -> None:
        assert self.h5 is not None and self.jf is not None
        self.h5.flush()
        self.jf.commit()

    def rollback(self) -> None:
        """Abandon a failed operation: drop HDF5's in-memory state and everything since the last commit."""
        assert self.jf is not None
        with contextlib.suppress(Exception):
            if self.h5 is not None:
                self.h5.close()
        self.h5 = None
        self.jf.rollback()
        self.h5 = h5py.File(self.jf, "r+")

    def close(self) -> None:
        try:
            if self.h5 is not None:
                self.h5.close()  # HDF5 rewrites the superblock on close
                assert self.jf is not None
                self.jf.commit()
        finally:
            self.h5 = self.jf = None
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None


class _MemoryHandle:
    """`h5+memory://name`: an in-memory HDF5 file (h5py's core driver) that lives as long as the
    process, shared by every store of that name, like `memory://`. Nothing to journal: a crash
    loses it anyway."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.RLock()
        self.refs = 0
        self.h5: h5py.File | None = None

    def file(self, url: str, key: str | None, create: bool) -> h5py.File | None:
        if self.h5 is None and create:
            self.h5 = h5py.File(f"{self.path}-{uuid.uuid4().hex}", "w", driver="core", backing_store=False)
        return self.h5

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass  # the checks before each change refuse bad input; h5py itself cannot fail half-way in memory

    def close(self) -> None:
        pass  # kept for the process: a reopened store of the same name sees the same values


_HANDLES: dict[str, _Handle | _MemoryHandle] = {}
_HANDLES_LOCK = threading.Lock()


def _acquire(path: str, in_memory: bool = False) -> _Handle | _MemoryHandle:
    real = path if in_memory else os.path.realpath(path)
    with _HANDLES_LOCK:
        handle = _HANDLES.get(real)
        if handle is None:
            handle = _HANDLES[real] = _MemoryHandle(real) if in_memory else _Handle(real)
        handle.refs += 1
        return handle


def _release(handle: _Handle | _MemoryHandle) -> None:
    with _HANDLES_LOCK:
        handle.refs -= 1
        if handle.refs > 0 or isinstance(handle, _MemoryHandle):
            return
        del _HANDLES[handle.path]
    with handle.lock:
        handle.close()


def _looks_like_hdf5(fd: int) -> bool:
    """The HDF5 signature sits at offset 0 or at a user-block boundary 512, 1024, 2048..."""
    size = os.fstat(fd).st_size
    offset = 0
    while offset + 8 <= size:
        if os.pread(fd, 8, offset) == b"\x89HDF\r\n\x1a\n":
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


# ---- the store ----------------------------------------------------------------------------------


class HDF5Store(Store):
    """Keys are HDF5 paths inside one file; see the module docstring for layout and crash safety."""

    supports_arrays = True
    supports_conditional_writes = True
    supports_append = False

    def __init__(
        self, path: str | os.PathLike[str], url: str | None = None, *, in_memory: bool = False, **dataset_options: Any
    ):
        unknown = sorted(set(dataset_options) - DATASET_OPTIONS)
        if unknown:
            raise TypeError(f"unknown HDF5 storage options {unknown} (known: {sorted(DATASET_OPTIONS)})")
        if in_memory:
            self.path = f"h5+memory://{os.fspath(path).strip('/')}"
        else:
            self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.dataset_options = dataset_options
        super().__init__(url or self.path)
        self._handle = _acquire(self.path, in_memory)
        try:  # an existing file is opened (locked, recovered, checked) now, so errors show at open
            with self._handle.lock:
                self._handle.file(self.url, None, create=False)
        except BaseException:
            _release(self._handle)
            raise

    # -- plumbing

    @contextlib.contextmanager
    def _file(self, key: str | None, create: bool = False) -> Iterator[h5py.File | None]:
        with self._handle.lock:
            yield self._handle.file(self.url, key, create)

    def _change(self, key: str, check: Callable[[h5py.File], Any], change: Callable[[h5py.File, Any], T]) -> T:
        """Run `check` (raises, changes nothing), then `change` as one commit; a failure in `change`
        leaves the last committed state."""
        with self._handle.lock:
            h5 = self._handle.file(self.url, key, create=True)
            assert h5 is not None
            checked = check(h5)
            try:
                result = change(h5, checked)
                self._handle.commit()
            except BaseException:
                self._handle.rollback()
                raise
            return result

    def _lookup(self, h5: h5py.File | None, key: str) -> tuple[str, Any]:
        """(kind, object) at `key`: kind is "bytes", "tree", "group" or "" (nothing there)."""
        node: Any = h5
        if node is None:
            return "", None
        for segment in key.split("/"):
            if _kind(node) in ("bytes", "tree", "foreign") or segment not in node:
                return "", None
            node = node[segment]
        return _kind(node), node

    def _value(self, h5: h5py.File | None, key: str, want: str) -> Any:
        kind, obj = self._lookup(h5, key)
        if kind == "tree" and want == "bytes":
            raise StoreError("the key holds a tree: use read_tree", url=self.url, key=key)
        if kind == "bytes" and want == "tree":
            raise StoreError("the key holds a bytes value, not a tree: use read", url=self.url, key=key)
        if kind != want:
            raise KeyNotFound("no value at this key", url=self.url, key=key)
        return obj

    def _check_writable(self, h5: h5py.File, key: str, if_absent: bool = False, if_match: str | None = None) -> bool:
        """Check the key can take a value and the preconditions hold; True if a value is there now."""
        segments = key.split("/")
        node: Any = h5
        for i, segment in enumerate(segments[:-1]):
            if segment not in node:
                break
            node = node[segment]
            if _kind(node) != "group":
                raise StoreError(
                    f"a value already sits at {'/'.join(segments[: i + 1])!r}, a parent segment of the key",
                    url=self.url,
                    key=key,
                )
        kind, obj = self._lookup(h5, key)
        if kind in ("group", "foreign"):
            what = "other keys live under it" if kind == "group" else "it holds an HDF5 object expstore did not write"
            raise StoreError(f"cannot store a value at this key: {what}", url=self.url, key=key)
        current = str(obj.attrs[VERSION_ATTR]) if kind else None
        if if_absent and current is not None:
            raise PreconditionFailed("if_absent: the key already holds a value", url=self.url, key=key)
        if if_match is not None and current != if_match:
            raise PreconditionFailed(f"if_match: version is {current!r}, expected {if_match!r}", url=self.url, key=key)
        return current is not None

    @staticmethod
    def _replace(h5: h5py.File, key: str, present: bool) -> tuple[h5py.Group, str]:
        """Delete the value at `key` if `present`; return (parent group, created as needed; last segment)."""
        if present:
            del h5[key]
        parent, _, name = key.rpartition("/")
        return (h5.require_group(parent) if parent else h5), name

    # -- bytes level

    def _read(self, key: str) -> bytes:
        with self._file(key) as h5:
            ds = self._value(h5, key, "bytes")
            out = np.empty(ds.shape, dtype=np.uint8)
            if out.size:
                ds.read_direct(out)
            return out.tobytes()

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        with self._file(key) as h5:
            ds = self._value(h5, key, "bytes")
            n = ds.shape[0]
            start, end = min(start, n), n if end is None else min(end, n)
            return ds[start:end].tobytes() if end > start else b""

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        array = np.frombuffer(data, dtype=np.uint8)
        token = uuid.uuid4().hex

        def change(h5: h5py.File, present: bool) -> None:
            parent, name = self._replace(h5, key, present)
            ds = parent.create_dataset(name, data=array)
            ds.attrs[KIND_ATTR] = "bytes"
            ds.attrs[VERSION_ATTR] = token

        self._change(key, lambda h5: self._check_writable(h5, key, if_absent, if_match), change)
        return token

    def _delete(self, key: str) -> None:
        with self._handle.lock:
            with self._file(key) as h5:
                if self._lookup(h5, key)[0] not in ("bytes", "tree"):
                    raise KeyNotFound("no value at this key", url=self.url, key=key)

            def change(h5: h5py.File, _: Any) -> None:
                del h5[key]
                segments = key.split("/")[:-1]
                while segments and len(h5["/".join(segments)]) == 0:  # prune folders left empty
                    del h5["/".join(segments)]
                    segments.pop()

            self._change(key, lambda h5: None, change)

    def _exists(self, key: str) -> bool:
        with self._file(key) as h5:
            return self._lookup(h5, key)[0] in ("bytes", "tree")

    def _size(self, key: str) -> int:
        with self._file(key) as h5:
            kind, obj = self._lookup(h5, key)
            if kind == "bytes":
                return int(obj.shape[0])
            if kind == "tree":
                return sum(int(obj[p].nbytes) for p in array_paths(json.loads(obj.attrs[SKELETON_ATTR])))
            raise KeyNotFound("no value at this key", url=self.url, key=key)

    def _version(self, key: str) -> str:
        with self._file(key) as h5:
            kind, obj = self._lookup(h5, key)
            if kind not in ("bytes", "tree"):
                raise KeyNotFound("no value at this key", url=self.url, key=key)
            return str(obj.attrs[VERSION_ATTR])

    def _list(self, prefix: str) -> list[str]:
        with self._file(prefix or None) as h5:
            if h5 is None:
                return []
            folder = prefix.rpartition("/")[0]
            kind, start = self._lookup(h5, folder) if folder else ("group", h5)
            if kind != "group":
                return []
            return list(_walk(start, f"{folder}/" if folder else ""))

    # -- array level

    def _write_tree(self, key: str, skeleton: Skeleton, arrays: dict[str, Any]) -> str:
        for path, array in arrays.items():
            try:
                h5py.h5t.py_create(array.dtype, logical=True)
            except TypeError:
                raise TypeError(
                    f"array {path!r} of the tree for key {key!r} in {self.url!r} has dtype {array.dtype}, "
                    "which HDF5 cannot store"
                ) from None
        token = uuid.uuid4().hex
        skeleton_json = json.dumps(skeleton, separators=(",", ":"))
        arrays = {path: a if a.flags.c_contiguous else a.copy(order="C") for path, a in arrays.items()}

        def change(h5: h5py.File, present: bool) -> None:
            # crc32c runs without the GIL on a second thread while HDF5 writes: it costs no save time
            with ThreadPoolExecutor(1, thread_name_prefix="expstore-crc32c") as pool:
                crcs = {path: pool.submit(array_crc32c, array) for path, array in arrays.items()}
                parent, name = self._replace(h5, key, present)
                group = parent.create_group(name)
                group.attrs[KIND_ATTR] = "tree"
                group.attrs[VERSION_ATTR] = token
                group.attrs[SKELETON_ATTR] = skeleton_json
                for path, array in arrays.items():
                    options: dict[str, Any] = {}
                    if array.ndim and array.size:  # 0-d and empty datasets cannot be chunked or filtered
                        options = {"chunks": _chunks(array.shape, array.itemsize), **self.dataset_options}
                    group.create_dataset(path, data=array, **options)
                for path, crc in crcs.items():
                    group[path].attrs[CRC32C_ATTRIBUTE] = np.uint32(crc.result())

        self._change(key, lambda h5: self._check_writable(h5, key), change)
        return token

    def _read_tree(self, key: str, select: list[str] | None) -> Any:
        with self._file(key) as h5:
            group = self._value(h5, key, "tree")
            skeleton = json.loads(group.attrs[SKELETON_ATTR])
            arrays = {}
            # each array's crc32c is checked on a second thread while HDF5 reads the next one
            with ThreadPoolExecutor(1, thread_name_prefix="expstore-crc32c") as pool:
                checks: list[Future[None]] = []
                for path in select_paths(array_paths(skeleton), select):
                    ds = group[path]
                    out = np.empty(ds.shape, dtype=ds.dtype)
                    if out.size:
                        ds.read_direct(out)
                    arrays[path] = out
                    stored = ds.attrs.get(CRC32C_ATTRIBUTE)
                    if stored is not None:  # trees written by earlier expstore carry none
                        checks.append(
                            pool.submit(check_array_crc32c, out, int(stored), url=self.url, key=key, path=path)
                        )
                for check in checks:
                    check.result()
            return unflatten(skeleton, arrays)

    def _close(self) -> None:
        _release(self._handle)


def _chunks(shape: tuple[int, ...], itemsize: int, target: int = CHUNK_BYTES) -> tuple[int, ...]:
    """Chunks of about `target` bytes, cut along the leading axes (h5py's guess is ~32 KiB for a
    4 MiB array: many small I/Os, each a Python call through the file-object driver)."""
    chunk = list(shape)
    for axis in range(len(chunk)):
        rest = itemsize * math.prod(chunk[axis + 1 :])
        if rest * chunk[axis] <= target:
            break
        chunk[axis] = max(1, target // rest) if rest <= target else 1
    return tuple(chunk)


def _kind(node: Any) -> str:
    if isinstance(node, h5py.Dataset):
        return "bytes" if node.attrs.get(KIND_ATTR) == "bytes" else "foreign"
    if isinstance(node, h5py.Group):
        return "tree" if node.attrs.get(KIND_ATTR) == "tree" else "group"
    return "foreign"


def _walk(group: h5py.Group, base: str) -> Iterator[str]:
    for name in group:
        if name.startswith(RESERVED_PREFIX):
            continue
        node = group[name]
        kind = _kind(node)
        if kind in ("bytes", "tree"):
            yield base + name
        elif kind == "group":
            yield from _walk(node, f"{base}{name}/")


def open_url(url: str, location: str, **storage_options: Any) -> HDF5Store:
    """Open the HDF5 file at `location` (created on the first write), or `h5+memory://name`; options
    are h5py dataset options for tree arrays (`compression="gzip"`, `compression_opts=4`, ...)."""
    scheme = url.partition("://")[0].lower() if "://" in url else "file"
    if scheme == "h5+memory":
        return HDF5Store(location, url=url, in_memory=True, **storage_options)
    if scheme not in ("h5", "file"):
        raise InvalidURL("HDF5 stores live on local disk (run.h5, h5:///abs/run.h5) or in memory (h5+memory://name)", url=url)
    return HDF5Store(location, url=url, **storage_options)
