"""HDF5Store: one HDF5 file per store, made crash-safe by a redo journal below the HDF5 library.

HDF5 has no journal of its own: a process killed while the library flushes metadata can leave
the whole file unreadable. h5py here talks to the file through `JournaledFile`, a file object
that sends writes past the last committed end of the file, and into its free sections, straight
to disk (committed state cannot reference those bytes) and keeps writes over other committed
bytes in memory until `commit()`, which makes them durable in `<file>.journal` before applying
them. Every store operation that changes the file ends with closing the h5py file + `commit()`,
so each one is atomic as a whole; a file opened after a crash replays (or discards) the journal
first. Each operation opens the file and closes it again (`backends/hdf5/file_access.py`: shared lock to read,
exclusive to change), so other processes and plain h5py can open it between operations.

Layout: a bytes value at `a/b` is a 1-D uint8 dataset `/a/b`; a tree at `k` is a group `/k`
whose attributes hold the skeleton and whose arrays are chunked datasets `/k/<array path>`, each
with its crc32c in an attribute.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import h5py
import numpy as np

from ...errors import InvalidURL, KeyNotFound, StoreError
from ...format.checksum import CRC32C_ATTRIBUTE, array_crc32c, check_array_crc32c
from ...format.tree import Skeleton, array_paths, dtype_notes, leaf_arrays, selected_arrays, unflatten
from ...format.typed_leaves import DTYPE_ATTRIBUTE
from ...store.base import Store
from ...store.conditions import check_condition
from ...store.keys import RESERVED_PREFIX
from .file_access import LOCK_TIMEOUT, FileHandle, MemoryHandle, disk_handle, memory_handle

__all__ = ["HDF5Store", "open_url"]

KIND_ATTR = "expstore"  # "bytes" on a bytes dataset, "tree" on a tree group
VERSION_ATTR = "expstore_version"
SKELETON_ATTR = "expstore_skeleton"
# h5py dataset options a user may pass through storage options; they apply to tree arrays.
DATASET_OPTIONS = frozenset({"compression", "compression_opts", "shuffle", "fletcher32", "scaleoffset", "chunks"})

CHUNK_BYTES = 2**20  # default chunk size of tree arrays (`chunks=` overrides)
PARALLEL_CRC_BYTES = 4 * 2**20  # trees this large compute their crc32c on a second thread
T = TypeVar("T")


# ---- the store ----------------------------------------------------------------------------------


class HDF5Store(Store):
    """Keys are HDF5 paths inside one file; see the module docstring for layout and crash safety."""

    supports_arrays = True
    supports_conditional_writes = True
    supports_append = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        url: str | None = None,
        *,
        in_memory: bool = False,
        lock_timeout: float = LOCK_TIMEOUT,
        **dataset_options: Any,
    ):
        unknown = sorted(set(dataset_options) - DATASET_OPTIONS)
        if unknown:
            raise TypeError(f"unknown HDF5 storage options {unknown} (known: {sorted(DATASET_OPTIONS | {'lock_timeout'})})")
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, numbers.Real) or not lock_timeout >= 0:
            raise ValueError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
        self.dataset_options = dataset_options
        if in_memory:
            self.path = f"h5+memory://{os.fspath(path).strip('/')}"
            super().__init__(url or self.path)
            self._handle: FileHandle | MemoryHandle = memory_handle(self.path)
        else:
            self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
            super().__init__(url or self.path)
            self._handle = disk_handle(self.path, float(lock_timeout))
            with self._handle.reading(self.url, None):  # an existing file is checked (and recovered) now
                pass

    # -- plumbing

    def _opened_to_read(self, key: str | None) -> contextlib.AbstractContextManager[h5py.File | None]:
        """A context manager yielding the h5py file opened to read for one operation (`None` if it does not exist yet)."""
        return self._handle.reading(self.url, key)

    def _change(self, key: str, check: Callable[[h5py.File], Any], change: Callable[[h5py.File, Any], T]) -> T:
        """Run `check` (raises, changes nothing), then `change`, as one commit under the file's
        exclusive lock; a failure anywhere leaves the last committed state."""
        with self._handle.writing(self.url, key) as h5:
            return change(h5, check(h5))

    def _lookup(self, h5: h5py.File | None, key: str) -> tuple[str, Any]:
        """(kind, object) at `key`: kind is "bytes", "tree", "group" or "" (nothing there)."""
        node: Any = h5
        if node is None:
            return "", None
        kind = "group"  # the root: never a value
        for segment in key.split("/"):
            if kind != "group" or segment not in node:
                return "", None
            node = node[segment]
            kind = _kind(node)
        return kind, node

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
        check_condition(current, if_absent, if_match, self.url, key)
        return current is not None

    @staticmethod
    def _install(h5: h5py.File, key: str, present: bool, make: Callable[[h5py.Group, str], object]) -> None:
        """`make(parent, name)` the new value under a temporary name beside `key`, then delete the
        old value (if `present`) and move the new one into place. The new bytes so land in free
        sections or past the end, which the journal writes once, never in the old value's space;
        that space is freed for the next rewrite. A file that forgets its free space when closed
        (made by earlier expstore or by plain h5py) deletes first instead, so that the new value
        reuses the old one's space (through the journal) and the file does not grow per rewrite."""
        parent_key, _, name = key.rpartition("/")
        parent = h5.require_group(parent_key) if parent_key else h5
        if present and not h5.id.get_create_plist().get_file_space_strategy()[1]:
            del parent[name]
            present = False
        temp = f"{RESERVED_PREFIX}new-{name}"  # no key starts with it: never a value's name
        if temp in parent:  # left by a failed write to an in-memory file (a file on disk rolls back)
            del parent[temp]
        make(parent, temp)
        if present:
            del parent[name]
        parent.move(temp, name)

    # -- bytes level

    def _read(self, key: str) -> bytes:
        with self._opened_to_read(key) as h5:
            ds = self._value(h5, key, "bytes")
            out = np.empty(ds.shape, dtype=np.uint8)
            if out.size:
                ds.read_direct(out)
            return out.tobytes()

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        with self._opened_to_read(key) as h5:
            ds = self._value(h5, key, "bytes")
            n = ds.shape[0]
            start, end = min(start, n), n if end is None else min(end, n)
            return ds[start:end].tobytes() if end > start else b""

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        array = np.frombuffer(data, dtype=np.uint8)
        token = uuid.uuid4().hex

        def make(parent: h5py.Group, name: str) -> None:
            ds = parent.create_dataset(name, data=array)
            ds.attrs[KIND_ATTR] = "bytes"
            ds.attrs[VERSION_ATTR] = token

        self._change(
            key,
            lambda h5: self._check_writable(h5, key, if_absent, if_match),
            lambda h5, present: self._install(h5, key, present, make),
        )
        return token

    def _delete(self, key: str) -> None:
        def check(h5: h5py.File | None) -> None:
            if self._lookup(h5, key)[0] not in ("bytes", "tree"):
                raise KeyNotFound("no value at this key", url=self.url, key=key)

        def change(h5: h5py.File, _: Any) -> None:
            del h5[key]
            segments = key.split("/")[:-1]
            while segments and len(h5["/".join(segments)]) == 0:  # prune folders left empty
                del h5["/".join(segments)]
                segments.pop()

        with self._opened_to_read(key) as h5:  # a missing key is reported without creating the file
            check(h5)
        self._change(key, check, change)  # checked again: another process may have deleted it since

    def _exists(self, key: str) -> bool:
        with self._opened_to_read(key) as h5:
            return self._lookup(h5, key)[0] in ("bytes", "tree")

    def _size(self, key: str) -> int:
        with self._opened_to_read(key) as h5:
            kind, obj = self._lookup(h5, key)
            if kind == "bytes":
                return int(obj.shape[0])
            if kind == "tree":
                return sum(int(obj[p].nbytes) for p in array_paths(json.loads(obj.attrs[SKELETON_ATTR])))
            raise KeyNotFound("no value at this key", url=self.url, key=key)

    def _version(self, key: str) -> str:
        with self._opened_to_read(key) as h5:
            kind, obj = self._lookup(h5, key)
            if kind not in ("bytes", "tree"):
                raise KeyNotFound("no value at this key", url=self.url, key=key)
            return str(obj.attrs[VERSION_ATTR])

    def _list(self, prefix: str) -> list[str]:
        with self._opened_to_read(prefix or None) as h5:
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

        def make(parent: h5py.Group, name: str) -> None:
            with _crc_pool(sum(a.nbytes for a in arrays.values())) as pool:
                crcs = {path: pool.submit(array_crc32c, array) for path, array in arrays.items()}
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
                for path, name in dtype_notes(skeleton).items():
                    group[path].attrs[DTYPE_ATTRIBUTE] = name

        self._change(key, lambda h5: self._check_writable(h5, key), lambda h5, present: self._install(h5, key, present, make))
        return token

    def _read_tree(self, key: str, select: list[str] | None, map_location: Any) -> Any:
        with self._opened_to_read(key) as h5:
            group = self._value(h5, key, "tree")
            skeleton = json.loads(group.attrs[SKELETON_ATTR])
            arrays = {}
            datasets = {path: group[path] for path in selected_arrays(leaf_arrays(skeleton), select)}
            with _crc_pool(sum(ds.nbytes for ds in datasets.values())) as pool:  # checks run while HDF5 reads on
                checks: list[Future[None]] = []
                for path, ds in datasets.items():
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
            return unflatten(skeleton, arrays, map_location=map_location)

    def _close(self) -> None:
        """Nothing stays open between operations."""


@contextlib.contextmanager
def _crc_pool(nbytes: int) -> Iterator[Executor]:
    """Where a tree's crc32c work runs: for `nbytes` of PARALLEL_CRC_BYTES or more a second thread,
    where google_crc32c releases the GIL while HDF5 does its I/O, so checksums add almost no time;
    below that inline, which is cheaper than starting a thread."""
    if nbytes < PARALLEL_CRC_BYTES:
        yield _Inline()
        return
    with ThreadPoolExecutor(1, thread_name_prefix="expstore-crc32c") as pool:
        yield pool


class _Inline(Executor):
    """An executor that runs each call at once in the caller's thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


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
